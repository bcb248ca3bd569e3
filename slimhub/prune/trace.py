"""Trace one forward pass and find the channels that must be pruned together.

Forward hooks record every call of a layer in the layer table
(:mod:`slimhub.prune.layers`). Between those layers, Paddle's autograd graph names
every functional operation (activations, pooling, ``+``, ``paddle.concat``,
``paddle.flatten``...), so nothing a model does in its ``forward`` goes unseen.

Each tensor's channel axis is described by a *layout*: the sequence of channel
*spaces* it is made of (a concat joins layouts; most operations keep them). A layer
whose entry *makes* channels starts a new space; one whose channels go *through*
(batch norms, depthwise convolutions) keeps the space of its input; a residual add
merges the spaces of its operands into one. Every space left at the end is a group of
coupled channels: pruning it removes the same channels in every layer it touches.

Spaces touched by an operation we cannot follow are *fixed* (never pruned) and a
warning names the operation; so are the model's input and outputs.
"""
from __future__ import annotations

from dataclasses import dataclass

import paddle
from paddle.jit.dy2static.program_translator import ProgramTranslator

from slimhub.prune.layers import (OUTPUT_CHANNELS, REGISTER_HINT, UnsupportedInput, prunable_entry,
                                  recording_calls)
from slimhub.prune.spaces import Member, Spaces

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


@dataclass(frozen=True)
class _Layout:
    """The channel axis of a tensor: spaces in order; ``flat`` after a reshape (a layer
    reading it infers how many entries of its axis each channel became)."""
    spaces: tuple
    flat: bool = False


_PARAM = "param"  # marker: the operand is a parameter used outside a known layer
_CONST = "const"  # marker: the operand carries no gradient (a buffer or a constant)


@dataclass
class Call:
    """One call of a layer with an entry (``prunable``: one that prunes it); the autograd
    nodes are taken at call time, before any in-place operation could replace them."""
    name: str
    layer: object
    entry: object
    prunable: bool
    x: paddle.Tensor
    y: paddle.Tensor
    x_node: object
    y_node: object


@dataclass
class _Foreign:
    """One call of a leaf layer with weights that no entry prunes: the nodes its forward
    made lie between ``y_node`` and the nodes of its inputs (``stop``)."""
    name: str
    layer: object
    y_node: object
    stop: frozenset


def _op_name(node):
    name = node.name()
    for suffix in ("Final", "GradNode"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return name.rstrip("_").lower()


def _ptr(node):
    return node.node_ptr() if node is not None else None


class Tracer:
    """Channel layouts of every traced tensor, built node by node in forward order."""

    def __init__(self, batch, calls, foreign):
        self.batch = batch
        self.calls = calls
        self.foreign = foreign  # _Foreign calls, for messages
        self._owners = None
        self.spaces = Spaces()
        self.layouts = {}    # autograd node id -> _Layout | None (unknown) | _PARAM
        self.layer_out = {}  # layer name -> space id of the channels it makes
        self.layer_in = {}   # layer name -> (layout, block) its input channels were tied to
        self.bound = {}      # call index -> {axis: (layout, block)}

    # ------------------------------------------------------------ utilities
    def length(self, layout):
        return sum(self.spaces.items[s].size for s in layout.spaces)

    def fix(self, layout, reason):
        if isinstance(layout, _Layout):
            self.spaces.fix(layout.spaces, reason)

    def add_members(self, layout, layer, role, axes, block=1):
        offset = 0
        for s in layout.spaces:
            members = self.spaces.items[self.spaces.find(s)].members
            member = Member(layer, role, axes, offset, block)
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

    def block(self, layout, width):
        """Entries of a ``width``-wide axis per channel of ``layout``: 1, or more after a
        reshape (a 7x7 map flattened: 49); None when they do not line up."""
        channels = self.length(layout)
        block = width // channels if layout.flat and width % channels == 0 else 1
        return block if channels * block == width else None

    def consume(self, name, layout, width, where):
        """``(layout, block)`` of the input channels of an axis ``width`` wide, tying
        repeated calls together; ``(None, 1)`` when they cannot be followed."""
        if not isinstance(layout, _Layout):
            return None, 1
        block = self.block(layout, width)
        if block is None:
            self.fix(layout, f"{where}: input has {self.length(layout)} channels, the layer {width}")
            return None, 1
        layout = _Layout(layout.spaces)
        previous = self.layer_in.get(name)
        if previous is not None:
            reason = f"{where}: called on inputs that do not line up"
            if previous[1] == block and self.tie(previous[0], layout, reason):
                return previous
            self.fix(previous[0], reason)
            self.fix(layout, reason)
            return None, 1
        self.layer_in[name] = (layout, block)
        return layout, block

    def out_space(self, name, size, blocks, axis):
        if name not in self.layer_out:
            sid = self.spaces.new(size, blocks=blocks)
            if size % blocks:
                self.spaces.fix([sid], f"layer {name!r}: channels not divisible by groups")
            self.spaces.items[sid].members.append(Member(name, "out", (axis,)))
            self.layer_out[name] = sid
        return self.layer_out[name]

    # ---------------------------------------------------------- known layers
    def layer(self, index, layout):
        """The output layout of call ``index`` of a prunable layer on input ``layout``."""
        call = self.calls[index]
        name, layer = call.name, call.layer
        where = f"{type(layer).__name__} {name!r}"
        try:
            coupling = call.entry.coupling(layer, call.x)
        except UnsupportedInput as exc:
            self.fix(layout, f"{where}: {exc}")
            return None
        if call.x.ndim < 2 or call.x.shape[0] != self.batch:
            self.fix(layout, f"{where}: input of shape {list(call.x.shape)} has no batch axis first")
            return None
        sizes = call.entry.axes(layer)
        bound = self.bound.setdefault(index, {})
        if coupling.through:
            width = sizes[coupling.through[0]]
            stored, block = self.consume(name, layout, width, where)
            if stored is None:
                return _Layout((self.spaces.new(width, fixed=True),))
            self.add_members(stored, name, coupling.role, coupling.through, block)
            bound.update({axis: (stored, block) for axis in coupling.through})
            return _Layout(stored.spaces, flat=block > 1)
        if coupling.reads:
            stored, block = self.consume(name, layout, sizes[coupling.reads], where)
            if stored is not None:
                bound[coupling.reads] = (stored, block)
                if coupling.groups == 1:
                    self.add_members(stored, name, "in", (coupling.reads,), block)
                elif len(stored.spaces) == 1 and block == 1:
                    self.add_members(stored, name, "in", (coupling.reads,))
                    self.spaces.require_blocks(stored.spaces[0], coupling.groups,
                                               f"{where}: grouped input cannot be split evenly")
                else:
                    self.fix(stored, f"{where}: grouped input made of concatenated or reshaped channels")
        if not coupling.makes:
            return None
        out = _Layout((self.out_space(name, sizes[coupling.makes], coupling.groups, coupling.makes),))
        bound[coupling.makes] = (out, 1)
        return out

    def counted(self, index, macs):
        """``[(size, per, block, spaces)]`` for each count of ``macs`` (call ``index``): the
        spaces whose removed channels (``block`` entries each) shrink it; () if none do."""
        call = self.calls[index]
        bound = dict(self.bound.get(index, {}))
        out = self.layouts.get(_ptr(call.y_node))
        if isinstance(out, _Layout):
            for axis, size, _ in macs.counts:
                if axis == OUTPUT_CHANNELS and self.block(out, size) is not None:
                    bound[axis] = (out, self.block(out, size))
        sides = []
        for axis, size, per in macs.counts:
            layout, block = bound.get(axis, (None, 1))
            sides.append((size, per, block, layout.spaces if layout is not None else ()))
        return sides

    # ------------------------------------------------------- functional ops
    def operands(self, node):
        return [_CONST if prev is None else self.layouts.get(prev.node_ptr()) for prev in node.next_functions]

    def op(self, node, origin):
        name = _op_name(node)
        args = self.operands(node)
        where = f"operation {name!r} after {origin}"
        if name in CHANNELWISE_OPS or name in RESHAPE_OPS:
            data = [a for a in args if a is not _CONST]
            if len(data) != 1 or not isinstance(data[0], _Layout):
                return self.unknown(node, args, where)
            if name in RESHAPE_OPS:
                return _Layout(data[0].spaces, flat=True)
            return data[0]
        if name in ELEMENTWISE_OPS:
            if any(a is _CONST or a is _PARAM for a in args):
                return self.unknown(node, args, where + " with a buffer, constant or parameter operand")
            if any(a is None for a in args):
                return self.unknown(node, args, where + " with an untraced operand")
            wide = [a for a in args if self.length(a) > 1]
            if not wide:
                return args[0]
            for other in wide[1:]:
                if not self.tie(wide[0], other, f"{where}: operands do not line up"):
                    return None
            return _Layout(wide[0].spaces, flat=any(a.flat for a in wide))
        if name == "concat":
            if any(not isinstance(a, _Layout) or a.flat for a in args):
                return self.unknown(node, args, where)
            return _Layout(tuple(s for a in args for s in a.spaces))
        if name == "gradnodeaccumulation":
            return None
        return self.unknown(node, args, where)

    def unknown(self, node, args, where):
        reason = f"{where} is not supported"
        owner = self.owner(node.node_ptr())
        if owner is not None:
            reason += (f" (it runs inside {type(owner.layer).__name__} {owner.name!r}, a layer type "
                       f"slimhub cannot prune: {REGISTER_HINT})")
        for a in args:
            self.fix(a, reason)
        return None

    def owner(self, ptr):
        """The call of a leaf layer with no entry whose forward made autograd node ``ptr``."""
        if self._owners is None:
            self._owners = {}
            for call in self.foreign:
                stack = [call.y_node]
                while stack:
                    node = stack.pop()
                    if node is None or node.node_ptr() in call.stop or node.node_ptr() in self._owners:
                        continue
                    self._owners[node.node_ptr()] = call
                    stack.extend(node.next_functions)
        return self._owners.get(ptr)

    # ------------------------------------------------------------ the pass
    def run(self, model, x, outputs):
        """Layouts of every node from the model input ``x`` to ``outputs``; the outputs' and
        the input's channels are fixed."""
        calls = self.calls
        by_out = {}  # autograd node id of a prunable layer's output -> call index
        for i, call in enumerate(calls):
            if call.y_node is not None and call.prunable:
                by_out.setdefault(call.y_node.node_ptr(), i)
        params = {p.grad_fn.node_ptr() for p in model.parameters() if p.grad_fn is not None}
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
        order, seen = [], set()
        for root in roots:
            stack = [(root, False)]
            while stack:
                node, done = stack.pop()
                ptr = node.node_ptr()
                if done:
                    order.append(ptr)
                    continue
                if ptr in seen:
                    continue
                seen.add(ptr)
                nodes[ptr] = node
                stack.append((node, True))
                stack.extend((prev, False) for prev in predecessors(ptr) if prev.node_ptr() not in seen)

        producer = {}  # node -> name of the nearest layer before it, for messages
        for ptr in order:
            if ptr in by_out:
                call = calls[by_out[ptr]]
                layout = self.layouts.get(_ptr(call.x_node))
                self.layouts[ptr] = self.layer(by_out[ptr], None if layout is _PARAM else layout)
                producer[ptr] = f"layer {call.name!r}"
                continue
            if ptr in params:  # a weight names no layer before the operations reading it
                self.layouts[ptr] = _PARAM
                continue
            node = nodes[ptr]
            prev = [p.node_ptr() for p in node.next_functions if p is not None]
            producer[ptr] = next((producer[p] for p in prev if p in producer), "the model input")
            if ptr == input_ptr:
                self.layouts[ptr] = _Layout((self.spaces.new(x.shape[1], fixed=True),))
            else:
                self.layouts[ptr] = self.op(node, producer[ptr])
        for t in outputs:
            if t.grad_fn is not None:
                self.fix(self.layouts.get(t.grad_fn.node_ptr()), None)


def _flatten_outputs(out):
    if isinstance(out, paddle.Tensor):
        return [out]
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, (list, tuple)):
        return [t for o in out for t in _flatten_outputs(o)]
    return []


def _foreign_leaves(model):
    """Leaf sublayers with weights of their own that no entry of the layer table prunes:
    the layers a message suggests registering."""
    return [(name, layer) for name, layer in model.named_sublayers()
            if not layer.sublayers() and layer.parameters() and prunable_entry(layer) is None]


def trace(model, x):
    """Run ``model(x)`` (gradients recorded) and return its :class:`Tracer`, every call of
    a layer in the table recorded and every node's layout worked out."""
    calls, foreign, hooks = [], [], []

    def record(name, layer, entry, inp, out):
        calls.append(Call(name, layer, entry, prunable_entry(layer) is not None, inp, out,
                          inp.grad_fn, out.grad_fn))

    def make_foreign_hook(name):
        def hook(layer, inputs, output):
            if isinstance(output, paddle.Tensor):
                stop = frozenset(_ptr(t.grad_fn) for t in inputs if isinstance(t, paddle.Tensor))
                foreign.append(_Foreign(name, layer, output.grad_fn, stop))
        return hook

    for name, layer in _foreign_leaves(model):
        hooks.append(layer.register_forward_post_hook(make_foreign_hook(name)))
    translator = ProgramTranslator.get_instance()
    was_static = translator.enable_to_static
    paddle.jit.enable_to_static(False)  # a to_static model runs its dygraph forward here
    try:
        with recording_calls(model, record), paddle.enable_grad():
            outputs = _flatten_outputs(model(x))
    finally:
        paddle.jit.enable_to_static(was_static)
        for h in hooks:
            h.remove()
    if not any(t.grad_fn is not None for t in outputs):
        raise RuntimeError(f"build_graph: the forward pass of {type(model).__name__} recorded no "
                           "autograd graph to trace (does it detach its output or run under no_grad?)")
    tracer = Tracer(int(x.shape[0]), calls, foreign)
    tracer.run(model, x, outputs)
    return tracer
