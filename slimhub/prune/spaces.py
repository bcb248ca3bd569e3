"""Channel spaces: sets of channels that are pruned together, merged with union-find.

A space is made by a layer (its output channels) or by the model input; operations that
tie two tensors' channels (a residual add, a layer called twice) merge spaces. A space
that must not be pruned is *fixed*, with the reason kept for a warning.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Member:
    """One place a group's channels live: the ``axes`` of ``layer`` from ``offset`` on,
    each channel being ``block`` consecutive entries of the axis (a Linear reading a
    flattened map).

    Roles: ``"out"`` the layer makes these channels (its filters are ranked); ``"in"``
    it reads them; ``"bn"`` / ``"dw"`` / ``"through"`` they go through it, channel i in
    making channel i out (batch norms, depthwise convolutions, registered layers).
    """
    layer: str
    role: str
    axes: tuple
    offset: int = 0
    block: int = 1


@dataclass
class Space:
    size: int
    blocks: int = 1
    fixed: bool = False
    members: list = field(default_factory=list)
    parent: int = -1


class Spaces:
    """Union-find over channel spaces."""

    def __init__(self):
        self.items = []
        self.reasons = {}  # root -> why it was fixed (shown in a warning)

    def new(self, size, fixed=False, blocks=1):
        self.items.append(Space(size=int(size), blocks=blocks, fixed=fixed))
        return len(self.items) - 1

    def find(self, i):
        while self.items[i].parent >= 0:
            i = self.items[i].parent
        return i

    def fix(self, ids, reason=None):
        for i in ids:
            root = self.find(i)
            self.items[root].fixed = True
            if reason and root not in self.reasons:
                self.reasons[root] = reason

    def union(self, a, b, reason):
        a, b = self.find(a), self.find(b)
        if a == b:
            return
        sa, sb = self.items[a], self.items[b]
        if sa.size != sb.size:
            self.fix([a, b], reason)
            return
        sb.parent = a
        sa.fixed = sa.fixed or sb.fixed
        sa.members.extend(sb.members)
        if b in self.reasons and a not in self.reasons:
            self.reasons[a] = self.reasons[b]
        self.require_blocks(a, sb.blocks, reason)

    def require_blocks(self, i, blocks, reason):
        root = self.find(i)
        space = self.items[root]
        space.blocks = math.lcm(space.blocks, blocks)
        if space.size % space.blocks:
            self.fix([root], reason)
