"""Groups of coupled channels of a model, and its MACs as a function of pruning.

:func:`build_graph` traces the model (:mod:`slimhub.prune.trace`) and turns every channel
space left unfixed into a :class:`Group`. The MACs of every counted layer call are those
of its entry in the layer table (:mod:`slimhub.prune.layers`), the same entry that
:func:`slimhub.flops.flops` counts with, each count shrinking with the removed channels
of the groups it reads.
"""
from __future__ import annotations

import fnmatch
import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import paddle
from paddle import nn

from slimhub.modes import eval_mode
from slimhub.prune.trace import trace
from slimhub.rules import Check, integer, number

DEFAULT_ROUND_TO = 8
"""Kept channel counts are multiples of this unless told otherwise: CPU runtimes compute
channels in vector blocks of 8 or 16, and a count off the multiple is slower (see
docs/prune.md)."""
PRUNED_FLOPS = number(0, 1, open_lo=True, open_hi=True)
"""The rule of a pruning target: the fraction of the network's MACs to remove."""
ROUND_TO = Check(integer(1).test, "a positive integer (kept channel counts are multiples of it; 1: no rounding)")
"""The rule of a channel multiple."""


@dataclass
class Group:
    """Coupled channels: ``size`` channels in ``blocks`` equal contiguous blocks (grouped
    convolutions); pruning removes the same number from every block and keeps either all
    ``size`` channels or a positive multiple of ``multiple`` (the least common multiple
    of the graph's ``round_to`` and ``blocks``)."""
    name: str
    size: int
    blocks: int
    members: list
    multiple: int = 1
    root: int = field(default=-1, repr=False)

    @property
    def sources(self):
        """Names of the layers whose output channels form this group."""
        return [m.layer for m in self.members if m.role == "out"]

    @property
    def removals(self):
        """Channels removed after 0, 1, 2... removal steps: each step leaves the next
        smaller multiple of ``multiple``, down to ``multiple`` itself."""
        m = self.multiple
        return [0] + [self.size - kept for kept in range((self.size - 1) // m * m, 0, -m)]


class PruneGraph:
    """Groups of coupled channels of a model, and its MACs as a function of pruning."""

    def __init__(self, groups, left_out, terms, round_to=1):
        self.groups = groups
        self.left_out = left_out
        self.round_to = round_to
        self._terms = terms  # per layer call: (unit, [(size, per, block, group roots)])
        self.base_flops = self.flops({})

    def group(self, name):
        for g in self.groups:
            if g.name == name:
                return g
        raise KeyError(f"no prunable group named {name!r}; groups: {[g.name for g in self.groups]}")

    def flops(self, removed):
        """MACs per sample after removing ``removed[group name]`` channels of each group."""
        removed_by_root = {g.root: int(removed.get(g.name, 0)) for g in self.groups}
        total = 0
        for unit, sides in self._terms:
            macs = unit
            for size, per, block, roots in sides:
                macs *= (size - block * sum(removed_by_root[r] for r in roots)) // per
            total += macs
        return total

    def removal_for_flops(self, order, pruned_flops):
        """Follow ``order`` (group indices, the n-th entry of a group taking its n-th
        removal step, see :attr:`Group.removals`) as far as needed to remove
        ``pruned_flops`` of the MACs; returns the channels to remove per group name.

        The shortest prefix of ``order`` that reaches the target is taken less its last
        entry; then each later entry that does not pass the target, a group stopping at
        its first entry that would. Of the states on the way (and each step past the
        target), the one with MACs closest to the target is returned: within one entry's
        worth of it, and closer where other groups' smaller steps fill the gap left by a
        large one (coarse steps of ``round_to``).
        """
        PRUNED_FLOPS.require(pruned_flops, "prune", "pruned_flops")
        order = np.asarray(order, dtype=np.int64)
        removals = [g.removals for g in self.groups]
        for g, r, n in zip(self.groups, removals, np.bincount(order, minlength=len(self.groups))):
            if n >= len(r):
                raise ValueError(f"removal_for_flops: order takes {n} removal steps of group {g.name!r}, "
                                 f"which has {len(r) - 1}")
        goal = (1.0 - pruned_flops) * self.base_flops

        def removal(counts):
            return {g.name: r[c] for g, r, c in zip(self.groups, removals, counts) if c}

        def prefix(n):
            return np.bincount(order[:n], minlength=len(self.groups))

        lo, hi = 0, len(order)
        if self.flops(removal(prefix(hi))) > goal:
            best = 1 - self.flops(removal(prefix(hi))) / self.base_flops
            rounding = f" keeping multiples of round_to={self.round_to} channels" if self.round_to > 1 else ""
            raise ValueError(
                f"cannot remove {pruned_flops:.1%} of the MACs: pruning every prunable group "
                f"as far as allowed{rounding} removes {best:.1%}")
        while lo < hi:  # smallest prefix reaching the goal (lo >= 1: the goal is below base)
            mid = (lo + hi) // 2
            if self.flops(removal(prefix(mid))) <= goal:
                hi = mid
            else:
                lo = mid + 1
        counts = prefix(lo - 1)
        best, best_gap = counts.copy(), self.flops(removal(counts)) - goal
        closed = np.zeros(len(self.groups), dtype=bool)
        for i in order[lo - 1:].tolist():
            if closed[i]:
                continue
            counts[i] += 1
            gap = self.flops(removal(counts)) - goal
            if abs(gap) < best_gap:
                best, best_gap = counts.copy(), abs(gap)
            if gap < 0:  # past the goal: the group stops before this step
                counts[i] -= 1
                closed[i] = True
        return removal(best)


def _as_patterns(value, where):
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return list(value)
    raise TypeError(f"{where} must be a glob pattern or a list of them, got {value!r}")


def _parse_shape(input_shape):
    try:
        shape = [int(s) for s in input_shape]
    except (TypeError, ValueError):
        raise TypeError(f"input_shape must be a sequence of ints like (3, 32, 32), got {input_shape!r}") from None
    if len(shape) < 2 or any(s <= 0 for s in shape):
        raise ValueError(f"input_shape must be positive sizes like (3, 32, 32), got {input_shape!r}")
    return shape


def build_graph(model, input_shape, include=None, exclude=None, round_to=1):
    """Trace ``model`` on one input of ``input_shape`` and return its :class:`PruneGraph`.

    ``include`` / ``exclude`` are glob patterns on layer names (``"features.*"``): a
    group is prunable when every layer whose output channels form it matches
    ``include`` (when given) and none matches ``exclude``. With ``round_to`` a group
    keeps all its channels or a positive multiple of ``round_to``; groups with no
    smaller multiple to keep are left out with a warning listing them.
    """
    if not isinstance(model, nn.Layer):
        raise TypeError(f"build_graph: model must be a paddle.nn.Layer, got {type(model).__name__}")
    round_to = ROUND_TO.require(round_to, "prune", "round_to")
    include = _as_patterns(include, "include")
    exclude = _as_patterns(exclude, "exclude")
    shape = _parse_shape(input_shape)
    if len(shape) == 3:
        shape = [1] + shape
    rng = np.random.default_rng(0)
    x = paddle.to_tensor(rng.standard_normal(shape).astype("float32"))
    x.stop_gradient = False
    frozen = [p for p in model.parameters() if p.stop_gradient]
    for p in frozen:
        p.stop_gradient = False
    try:
        with eval_mode(model):
            tracer = trace(model, x)
    finally:
        for p in frozen:
            p.stop_gradient = True
    return _finish(tracer, include, exclude, round_to)


def _terms(tracer, groups):
    """MACs of every counted call as ``(unit, sides)``: a side's count shrinks by ``block``
    for each channel removed from a group it reads; constant counts go into ``unit``."""
    find = tracer.spaces.find
    roots = {g.root for g in groups}
    terms = []
    for i, call in enumerate(tracer.calls):
        macs = call.entry.macs(call.layer, call.x, call.y)
        unit, sides = macs.unit, []
        for size, per, block, spaces in tracer.counted(i, macs):
            pruned = tuple(r for r in map(find, spaces) if r in roots)
            if pruned:
                sides.append((size, per, block, pruned))
            else:
                unit *= size // per
        terms.append((unit, sides))
    return terms


def _finish(tracer, include, exclude, round_to):
    spaces, calls = tracer.spaces, tracer.calls

    def in_scope(layer):
        if include and not any(fnmatch.fnmatchcase(layer, p) for p in include):
            return False
        return not any(fnmatch.fnmatchcase(layer, p) for p in exclude)

    first_call = {}
    for i, c in enumerate(calls):
        first_call.setdefault(c.name, i)
    groups, left_out, warned, unrounded = [], {}, set(), []
    for i, space in enumerate(spaces.items):
        if space.parent >= 0:
            continue
        sources = [m.layer for m in space.members if m.role == "out"]
        if not sources:
            continue
        name = min(sources, key=first_call.__getitem__)
        if space.fixed:
            reason = spaces.reasons.get(i)
            if reason is None:
                reason = "feeds the model output"
            elif reason not in warned:
                warned.add(reason)
                warnings.warn(f"prune: {reason}; the channels of {name!r} and the layers coupled "
                              "with it are left unpruned", stacklevel=3)
            left_out[name] = reason
        elif space.size <= space.blocks:
            left_out[name] = "too few channels to prune"
        elif not all(in_scope(s) for s in sources):
            left_out[name] = "out of scope (include/exclude)"
        elif space.size <= math.lcm(round_to, space.blocks):
            left_out[name] = (f"{space.size} channels, no smaller multiple of round_to={round_to} to keep"
                              + (f" in {space.blocks} equal blocks" if space.blocks > 1 else ""))
            unrounded.append((name, space.size))
        else:
            groups.append(Group(name=name, size=space.size, blocks=space.blocks,
                                members=list(space.members),
                                multiple=math.lcm(round_to, space.blocks), root=i))
    unrounded.sort(key=lambda item: first_call[item[0]])
    listed = ", ".join(f"{name!r} ({size})" for name, size in unrounded)
    if unrounded and not groups:
        raise ValueError(f"prune: round_to={round_to} leaves nothing to prune: no group has a smaller "
                         f"multiple of it to keep: {listed}")
    if unrounded:
        warnings.warn(f"prune: round_to={round_to}: groups left unpruned, with no smaller multiple of it "
                      f"to keep: {listed}", stacklevel=3)
    groups.sort(key=lambda g: first_call[g.name])  # forward order
    return PruneGraph(groups, left_out, _terms(tracer, groups), round_to)
