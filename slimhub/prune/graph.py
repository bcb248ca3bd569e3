"""Trace one forward pass and group the channels that must be pruned together.

The trace runs the model once (eval mode, gradients recorded) with hooks on the
layers whose channels we know how to cut: ``Conv2D``, ``Linear`` and batch norms.
Between those layers, Paddle's autograd graph names every functional operation
(activations, pooling, ``+``, ``paddle.concat``, ``paddle.flatten``...), so nothing
a model does in its ``forward`` goes unseen.

Each tensor's channel axis is described by a *layout*: the sequence of channel
*spaces* it is made of (a concat joins layouts; most operations keep them). A
convolution or linear layer starts a new space (its output channels); batch norms
and depthwise convolutions keep the space of their input; a residual add merges
the spaces of its operands into one. Every space left at the end is a group of
coupled channels: pruning it removes the same channels in every layer it touches.

Spaces touched by an operation we cannot follow are *fixed* (never pruned) and a
warning names the operation; so are the model's input and outputs.
"""
from __future__ import annotations

import fnmatch
import math
import numbers
import warnings
from dataclasses import dataclass, field

import numpy as np
import paddle
from paddle import nn
from paddle.jit.dy2static.program_translator import ProgramTranslator

# Autograd node names (``ReluGradNode`` -> ``relu``) of operations that act on each
# channel separately and keep the channel axis where it is.
CHANNELWISE_OPS = frozenset({
    "relu", "relu6", "leakyrelu", "elu", "selu", "celu", "gelu", "silu", "swish", "sigmoid",
    "logsigmoid", "tanh", "hardswish", "hardsigmoid", "hardtanh", "mish", "softplus",
    "softsign", "scale", "dropout", "pool2d", "maxpool2dwithindex", "cast", "assign", "clip",
    "pow", "sqrt", "square", "exp", "abs", "nearestinterp", "bilinearinterp",
})
# Element-wise operations of several tensors (with broadcasting): operands share channels.
ELEMENTWISE_OPS = frozenset({"add", "subtract", "multiply", "divide", "maximum", "minimum"})
# Operations that change the shape but keep the channel-major order of the data.
RESHAPE_OPS = frozenset({"flatten", "reshape", "squeeze", "unsqueeze"})

DEFAULT_ROUND_TO = 8
"""Kept channel counts are multiples of this unless told otherwise: CPU runtimes compute
channels in vector blocks of 8 or 16, and a count off the multiple is slower (see
docs/prune.md)."""

BATCH_NORMS = (nn.BatchNorm1D, nn.BatchNorm2D, nn.BatchNorm, nn.SyncBatchNorm)
_CHANNEL_FIRST = ("NC", "NCL", "NCHW")
_POOLS = (nn.MaxPool2D, nn.AvgPool2D)
_ADAPTIVE_POOLS = (nn.AdaptiveAvgPool2D, nn.AdaptiveMaxPool2D)


@dataclass(frozen=True)
class Member:
    """One place a group's channels live: ``role`` of ``layer`` from ``offset`` on.

    Roles: ``"out"`` output channels of a Conv2D / out features of a Linear (the
    layers whose filters are ranked); ``"in"`` input channels of a Conv2D / in features
    of a Linear, each channel being ``block`` consecutive features; ``"bn"`` channels of
    a batch norm; ``"dw"`` channels of a depthwise Conv2D (input and output tied).
    """
    layer: str
    role: str
    offset: int = 0
    block: int = 1


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


@dataclass
class _Space:
    size: int
    blocks: int = 1
    fixed: bool = False
    members: list = field(default_factory=list)
    parent: int = -1


class _Spaces:
    """Union-find over channel spaces."""

    def __init__(self):
        self.items = []
        self.reasons = {}  # root -> why it was fixed (shown in a warning)

    def new(self, size, fixed=False, blocks=1):
        self.items.append(_Space(size=int(size), blocks=blocks, fixed=fixed))
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


@dataclass(frozen=True)
class _Layout:
    """The channel axis of a tensor: spaces in order; ``flat`` after a reshape (a
    Linear reading it infers how many features each channel became)."""
    spaces: tuple
    flat: bool = False


_PARAM = "param"  # marker: the operand is a parameter used outside a known layer
_CONST = "const"  # marker: the operand carries no gradient (a buffer or a constant)


def _op_name(node):
    name = node.name()
    for suffix in ("Final", "GradNode"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return name.rstrip("_").lower()


def _has_paddle_forward(layer):
    return type(layer).forward.__module__.startswith("paddle.")


def _as_patterns(value, where):
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return list(value)
    raise TypeError(f"{where} must be a glob pattern or a list of them, got {value!r}")


@dataclass
class _Call:
    """One call of a layer; the autograd nodes are taken at call time, before any
    in-place operation could replace them."""
    name: str
    layer: nn.Layer
    x: paddle.Tensor
    y: paddle.Tensor
    x_node: object
    y_node: object


class _Cost:
    """MACs of one layer call: ``unit`` x the product of its current channel counts."""

    def __init__(self, unit, sides=()):
        self.unit = unit
        self.sides = sides  # (root ids, sizes, const, mult, div): count = (kept+const)*mult//div


class PruneGraph:
    """Groups of coupled channels of a model, and its MACs as a function of pruning."""

    def __init__(self, groups, left_out, costs, round_to=1):
        self.groups = groups
        self.left_out = left_out
        self.round_to = round_to
        self._costs = costs
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
        for cost in self._costs:
            macs = cost.unit
            for roots, sizes, const, mult, div in cost.sides:
                kept = const + sum(s - removed_by_root.get(r, 0) for r, s in zip(roots, sizes))
                macs *= kept * mult // div
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
        if not isinstance(pruned_flops, (int, float)) or not 0 < pruned_flops < 1:
            raise ValueError(f"pruned_flops must be a fraction in (0, 1), got {pruned_flops!r}")
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


class _Tracer:
    """Channel layouts of every traced tensor, built node by node in forward order."""

    def __init__(self, batch):
        self.batch = batch
        self.spaces = _Spaces()
        self.layouts = {}    # autograd node id -> _Layout | None (unknown) | _PARAM
        self.layer_out = {}  # layer name -> space id of its output channels
        self.layer_in = {}   # layer name -> layout its input channels were tied to
        self.by_out = {}     # autograd node id of a known layer's output -> call index

    # ------------------------------------------------------------ utilities
    def length(self, layout):
        return sum(self.spaces.items[s].size for s in layout.spaces)

    def fix(self, layout, reason):
        if isinstance(layout, _Layout):
            self.spaces.fix(layout.spaces, reason)

    def add_members(self, layout, layer, role, block=1):
        offset = 0
        for s in layout.spaces:
            members = self.spaces.items[self.spaces.find(s)].members
            member = Member(layer, role, offset, block)
            if member not in members:  # a layer called twice is one member
                members.append(member)
            offset += self.spaces.items[s].size

    def tie(self, a, b, reason):
        """Make two layouts the same channels; False when they do not line up."""
        sa = [self.spaces.items[s].size for s in a.spaces]
        sb = [self.spaces.items[s].size for s in b.spaces]
        if sa != sb:
            self.fix(a, reason)
            self.fix(b, reason)
            return False
        for x, y in zip(a.spaces, b.spaces):
            self.spaces.union(x, y, reason)
        return True

    def consume(self, name, layout, width, reason_prefix):
        """Check that ``layout`` is ``width`` channels wide; tie repeated calls together."""
        if not isinstance(layout, _Layout):
            return None
        if self.length(layout) != width:
            self.fix(layout, f"{reason_prefix}: input has a different channel count than expected")
            return None
        previous = self.layer_in.get(name)
        if previous is not None:
            if not self.tie(previous, layout, f"{reason_prefix}: called on inputs that do not line up"):
                return None
            return previous
        self.layer_in[name] = layout
        return layout

    def out_space(self, name, size, blocks=1):
        if name not in self.layer_out:
            sid = self.spaces.new(size, blocks=blocks)
            if size % blocks:
                self.spaces.fix([sid], f"layer {name!r}: channels not divisible by groups")
            self.spaces.items[sid].members.append(Member(name, "out"))
            self.layer_out[name] = sid
        return self.layer_out[name]

    # ---------------------------------------------------------- known layers
    def conv(self, call, layout):
        layer, name = call.layer, call.name
        where = f"Conv2D {name!r}"
        cin, cout, groups = layer._in_channels, layer._out_channels, layer._groups
        if layer._data_format != "NCHW" or call.x.ndim != 4 or call.x.shape[0] != self.batch:
            self.fix(layout, f"{where}: only NCHW input is supported")
            return None
        layout = self.consume(name, layout, cin, where)
        if groups == cin == cout:  # depthwise: output channel i is input channel i
            if layout is None:
                return _Layout((self.spaces.new(cout, fixed=True),))
            self.add_members(layout, name, "dw")
            return _Layout(layout.spaces)
        if layout is not None:
            if groups == 1:
                self.add_members(layout, name, "in")
            elif len(layout.spaces) == 1:
                self.add_members(layout, name, "in")
                self.spaces.require_blocks(layout.spaces[0], groups,
                                           f"{where}: grouped input cannot be split evenly")
            else:
                self.fix(layout, f"{where}: grouped convolution over concatenated inputs")
        return _Layout((self.out_space(name, cout, blocks=groups),))

    def batch_norm(self, call, layout):
        layer, name = call.layer, call.name
        where = f"{type(layer).__name__} {name!r}"
        fmt = getattr(layer, "_data_format", getattr(layer, "_data_layout", None))
        if fmt not in _CHANNEL_FIRST or call.x.shape[0] != self.batch:
            self.fix(layout, f"{where}: only channel-first input is supported")
            return None
        layout = self.consume(name, layout, int(layer._mean.shape[0]), where)
        if layout is None:
            return None
        self.add_members(layout, name, "bn")
        return _Layout(layout.spaces)

    def linear(self, call, layout):
        layer, name = call.layer, call.name
        where = f"Linear {name!r}"
        fin, fout = layer.weight.shape
        if call.x.ndim != 2 or call.x.shape[0] != self.batch:
            self.fix(layout, f"{where}: input of shape {list(call.x.shape)}, only [batch, features]")
            return None
        if isinstance(layout, _Layout):
            channels = self.length(layout)
            block = fin // channels if layout.flat and fin % channels == 0 else 1
            if channels * block != fin:
                self.fix(layout, f"{where}: {fin} input features do not match {channels} channels")
            else:
                stored = self.consume(name, _Layout(layout.spaces), channels, where)
                if stored is not None:
                    self.add_members(stored, name, "in", block)
        return _Layout((self.out_space(name, fout),))

    # ------------------------------------------------------- functional ops
    def operands(self, node):
        out = []
        for prev in node.next_functions:
            out.append(_CONST if prev is None else self.layouts.get(prev.node_ptr()))
        return out

    def op(self, node, origin):
        name = _op_name(node)
        args = self.operands(node)
        where = f"operation {name!r} after {origin}"
        if name in CHANNELWISE_OPS or name in RESHAPE_OPS:
            data = [a for a in args if a is not _CONST]
            if len(data) != 1 or not isinstance(data[0], _Layout):
                return self.unknown(args, where)
            if name in RESHAPE_OPS:
                return _Layout(data[0].spaces, flat=True)
            return data[0]
        if name in ELEMENTWISE_OPS:
            if any(a is _CONST or a is _PARAM for a in args):
                return self.unknown(args, where + " with a buffer, constant or parameter operand")
            if any(a is None for a in args):
                return self.unknown(args, where + " with an untraced operand")
            wide = [a for a in args if self.length(a) > 1]
            if not wide:
                return args[0]
            for other in wide[1:]:
                if not self.tie(wide[0], other, f"{where}: operands do not line up"):
                    return None
            return _Layout(wide[0].spaces, flat=any(a.flat for a in wide))
        if name == "concat":
            if any(not isinstance(a, _Layout) or a.flat for a in args):
                return self.unknown(args, where)
            return _Layout(tuple(s for a in args for s in a.spaces))
        if name == "gradnodeaccumulation":
            return None
        return self.unknown(args, where)

    def unknown(self, args, where):
        for a in args:
            self.fix(a, f"{where} is not supported")
        return None


def _parse_shape(input_shape):
    try:
        shape = [int(s) for s in input_shape]
    except (TypeError, ValueError):
        raise TypeError(f"input_shape must be a sequence of ints like (3, 32, 32), got {input_shape!r}") from None
    if len(shape) < 2 or any(s <= 0 for s in shape):
        raise ValueError(f"input_shape must be positive sizes like (3, 32, 32), got {input_shape!r}")
    return shape


def _flatten_outputs(out):
    if isinstance(out, paddle.Tensor):
        return [out]
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, (list, tuple)):
        return [t for o in out for t in _flatten_outputs(o)]
    return []


def _record_calls(model, x):
    """Run ``model(x)`` recording every call of a layer we prune or count."""
    calls, hooks = [], []

    def make_hook(name, layer):
        def hook(lyr, inputs, output):
            if inputs and isinstance(inputs[0], paddle.Tensor) and isinstance(output, paddle.Tensor):
                calls.append(_Call(name, layer, inputs[0], output, inputs[0].grad_fn, output.grad_fn))
        return hook

    counted = (nn.Conv2D, nn.Conv2DTranspose, nn.Linear) + BATCH_NORMS + _POOLS + _ADAPTIVE_POOLS
    for name, layer in model.named_sublayers(include_self=True):
        if isinstance(layer, counted):
            hooks.append(layer.register_forward_post_hook(make_hook(name, layer)))
    translator = ProgramTranslator.get_instance()
    was_static = translator.enable_to_static
    paddle.jit.enable_to_static(False)  # a to_static model runs its dygraph forward here
    try:
        with paddle.enable_grad():
            outputs = _flatten_outputs(model(x))
    finally:
        paddle.jit.enable_to_static(was_static)
        for h in hooks:
            h.remove()
    if not any(t.grad_fn is not None for t in outputs):
        raise RuntimeError(f"build_graph: the forward pass of {type(model).__name__} recorded no "
                           "autograd graph to trace (does it detach its output or run under no_grad?)")
    return calls, outputs


def layer_kind(layer):
    """"conv", "linear" or "bn" for the layers whose channels can be cut, else None
    (also for subclasses with their own ``forward``: what they compute is unknown)."""
    if not _has_paddle_forward(layer):
        return None
    if isinstance(layer, nn.Conv2D):
        return "conv"
    if isinstance(layer, nn.Linear):
        return "linear"
    if isinstance(layer, BATCH_NORMS):
        return "bn"
    return None


def check_round_to(round_to, where):
    """``round_to`` if it is a positive integer, else a ValueError naming ``where``."""
    if isinstance(round_to, bool) or not isinstance(round_to, numbers.Integral) or round_to < 1:
        raise ValueError(f"{where}: round_to must be a positive integer (kept channel counts are "
                         f"multiples of it; 1: no rounding), got {round_to!r}")
    return int(round_to)


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
    round_to = check_round_to(round_to, "prune")
    include = _as_patterns(include, "include")
    exclude = _as_patterns(exclude, "exclude")
    shape = _parse_shape(input_shape)
    if len(shape) == 3:
        shape = [1] + shape
    rng = np.random.default_rng(0)
    x = paddle.to_tensor(rng.standard_normal(shape).astype("float32"))
    x.stop_gradient = False
    frozen = [p for p in model.parameters() if p.stop_gradient]
    was_training = model.training
    model.eval()
    for p in frozen:
        p.stop_gradient = False
    try:
        calls, outputs = _record_calls(model, x)
        tracer = _Tracer(shape[0])
        _propagate(tracer, model, x, calls, outputs)
    finally:
        for p in frozen:
            p.stop_gradient = True
        if was_training:
            model.train()
    return _finish(tracer, calls, include, exclude, round_to)


def _propagate(tracer, model, x, calls, outputs):
    by_out = tracer.by_out
    for i, call in enumerate(calls):
        if layer_kind(call.layer) is not None and call.y_node is not None:
            by_out.setdefault(call.y_node.node_ptr(), i)
    params = {p.grad_fn.node_ptr(): p for p in model.parameters() if p.grad_fn is not None}
    input_ptr = x.grad_fn.node_ptr()
    nodes = {}

    def predecessors(ptr):
        if ptr in by_out:
            node = calls[by_out[ptr]].x_node
            return [node] if node is not None else []
        return [n for n in nodes[ptr].next_functions if n is not None]

    # iterative post-order: every node after the nodes it reads
    roots = [t.grad_fn for t in outputs if t.grad_fn is not None]
    roots += [c.y_node for c in calls if c.y_node is not None]
    order, state = [], {}
    for root in roots:
        stack = [(root, False)]
        while stack:
            node, done = stack.pop()
            ptr = node.node_ptr()
            if done:
                order.append(ptr)
                continue
            if ptr in state:
                continue
            state[ptr] = True
            nodes[ptr] = node
            stack.append((node, True))
            for prev in predecessors(ptr):
                if prev.node_ptr() not in state:
                    stack.append((prev, False))

    producer = {}  # node -> name of the nearest layer before it, for messages
    for ptr in order:
        if ptr in by_out:
            call = calls[by_out[ptr]]
            src = call.x_node
            layout = tracer.layouts.get(src.node_ptr()) if src is not None else None
            if layout is _PARAM:
                layout = None
            kind = layer_kind(call.layer)
            handler = {"conv": tracer.conv, "linear": tracer.linear, "bn": tracer.batch_norm}[kind]
            tracer.layouts[ptr] = handler(call, layout)
            producer[ptr] = call.name
            continue
        node = nodes[ptr]
        prev = [p.node_ptr() for p in node.next_functions if p is not None]
        producer[ptr] = next((producer[p] for p in prev if p in producer), "the model input")
        if ptr == input_ptr:
            tracer.layouts[ptr] = _Layout((tracer.spaces.new(x.shape[1], fixed=True),))
        elif ptr in params:
            tracer.layouts[ptr] = _PARAM
        else:
            tracer.layouts[ptr] = tracer.op(node, f"layer {producer[ptr]!r}"
                                            if producer[ptr] != "the model input" else producer[ptr])
    for t in outputs:
        if t.grad_fn is not None:
            tracer.fix(tracer.layouts.get(t.grad_fn.node_ptr()), None)


def _layout_of(tracer, node):
    layout = tracer.layouts.get(node.node_ptr()) if node is not None else None
    return layout if isinstance(layout, _Layout) else None


def _side(tracer, layout, width, mult=1, div=1):
    """A channel count of a layer: kept channels of ``layout`` or the constant ``width``."""
    if layout is None:
        return ((), (), width, mult, div)
    roots, sizes, const = [], [], 0
    for s in layout.spaces:
        space = tracer.spaces.items[tracer.spaces.find(s)]
        if space.fixed:
            const += tracer.spaces.items[s].size
        else:
            roots.append(tracer.spaces.find(s))
            sizes.append(tracer.spaces.items[s].size)
    return (tuple(roots), tuple(sizes), const, mult, div)


def _cost(tracer, call):
    layer, x, y = call.layer, call.x, call.y
    n = int(x.shape[0])
    numel_y = int(np.prod(y.shape)) // n
    kind = layer_kind(call.layer) if call.y_node is not None and call.y_node.node_ptr() in tracer.by_out else None
    if isinstance(layer, (nn.Conv2D, nn.Conv2DTranspose)):
        cin, cout, groups = layer._in_channels, layer._out_channels, layer._groups
        unit = numel_y // cout * int(np.prod(layer._kernel_size))
        if kind != "conv":
            return _Cost(unit * cout * (cin // groups))
        in_layout = tracer.layer_in.get(call.name)
        out_layout = _layout_of(tracer, call.y_node)
        if groups == cin == cout:
            return _Cost(unit, (_side(tracer, out_layout, cout),))
        return _Cost(unit, (_side(tracer, out_layout, cout), _side(tracer, in_layout, cin, 1, groups)))
    if isinstance(layer, nn.Linear):
        fin, fout = layer.weight.shape
        unit = numel_y // fout
        if kind != "linear":
            return _Cost(unit * fout * fin)
        in_layout = tracer.layer_in.get(call.name)
        block = 1
        if in_layout is not None:
            block = fin // tracer.length(in_layout)
        return _Cost(unit, (_side(tracer, _layout_of(tracer, call.y_node), fout),
                            _side(tracer, in_layout, fin // block, block, 1)))
    channels = int(y.shape[1]) if y.ndim > 1 else 1
    if isinstance(layer, BATCH_NORMS):
        layout = _layout_of(tracer, call.y_node) if kind == "bn" else None
        return _Cost(numel_y // channels, (_side(tracer, layout, channels),))
    layout = _layout_of(tracer, call.y_node) if y.ndim == 4 else None
    if layout is not None and tracer.length(layout) != channels:
        layout = None
    if isinstance(layer, _POOLS):
        k = layer.ksize
        area = k * k if isinstance(k, int) else int(np.prod(k))
        return _Cost(numel_y // channels * area, (_side(tracer, layout, channels),))
    numel_x = int(np.prod(x.shape)) // n  # adaptive pools: one per input element
    return _Cost(numel_x // channels, (_side(tracer, layout, channels),))


def _finish(tracer, calls, include, exclude, round_to):
    spaces = tracer.spaces
    costs = [_cost(tracer, c) for c in calls]

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
    return PruneGraph(groups, left_out, costs, round_to)
