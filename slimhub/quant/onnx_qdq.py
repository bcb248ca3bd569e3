"""Rewrite a float32 ONNX graph (as paddle2onnx writes it) into int8 QDQ form with
given int8 weights and activation scales.

For every quantized layer (found by the name of its weight initializer):

- the weight becomes an int8 initializer + per-channel ``DequantizeLinear``;
- the layer's data input goes through ``QuantizeLinear``/``DequantizeLinear`` with the
  learned scale, zero point 0: uint8 for an unsigned grid, int8 for a signed one. An
  8-bit grid is the type's whole range, so the QuantizeLinear saturates where the fake
  quantizer clips; other widths get a ``Clip`` to the grid's range first. A dynamic scale
  is computed in the graph from the input's abs max;
- a conv whose layer has an output quantizer (8-bit; its output feeds a residual sum) gets
  that Q/DQ after its output (after the bias). Where the sum (after a ``Relu``, if any) is
  read by quantizers only, OpenVINO (2026.4) fuses conv -> quantize -> sum -> next
  quantize into one convolution and skips the first rounding (a step its source marks as
  unsafe); there ``Max(y, lowest float32)`` follows the DQ: an exact identity that OpenVINO
  does not fuse and that onnxruntime leaves outside its ``QLinearConv``;
- a Conv with a static input scale whose output reaches, through ``Relu`` / ``MaxPool`` /
  ``Reshape`` / ``Flatten`` only, the input quantizer of the next layer gets the same Q/DQ
  right after it too. This is exact (these quantizers are monotone and map 0 to 0, so
  they commute with these ops: ``relu(dq(q(y))) == dq(q(relu(y)))``) and lets
  onnxruntime fuse DQ -> Conv -> Q into an int8 ``QLinearConv`` (and drop a ReLU before a
  uint8 QuantizeLinear). A conv whose output goes straight into a QuantizeLinear (an
  output quantizer, or the next layer's input) is fused the same way. ``QLinearConv``
  takes the bias (paddle2onnx writes it as a separate ``Add``) as int32 codes of step
  ``s_x * s_w`` per channel. That step can be coarse: a
  channel whose BatchNorm variance was near zero (an input that was always zero) folds
  into huge weights, hence a huge ``s_w``, and outputs its bias on every pixel. So the
  bias becomes int32 only where the rounding moves outputs by at most ``BIAS_TOLERANCE``
  of the output step; otherwise the Conv keeps its float bias ``Add`` and runs in float
  on the dequantized values (exact). Depthwise convs need the tolerance of a tenth of a
  step: with few products per output, their step ``s_x * s_w`` is 1.5-17% of the output
  step (docs/quant.md has the accuracy it costs).
  Convs with a dynamic input scale get their float bias inside.
"""
from __future__ import annotations

import numpy as np
from onnx import helper, numpy_helper

from slimhub.quant.quanters import EPS

INT32_MAX = 2 ** 31 - 1
MONOTONE = ("Relu", "MaxPool", "Reshape", "Flatten")  # commute with the activation quantizers
BIAS_TOLERANCE = 0.1  # largest int32 bias rounding error, as a fraction of the output step


class _Graph:
    """The few graph queries and edits the rewrite needs."""

    def __init__(self, graph):
        self.graph = graph

    def initializers(self):
        return {init.name: init for init in self.graph.initializer}

    def producers(self):
        return {out: node for node in self.graph.node for out in node.output}

    def consumers(self, name):
        return [node for node in self.graph.node if name in node.input]

    def const(self, name, array):
        self.graph.initializer.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def add(self, op_type, inputs, outputs, **attrs):
        self.graph.node.append(helper.make_node(op_type, inputs, outputs, **attrs))
        return outputs[0]

    def value(self, name):
        init = self.initializers().get(name)
        return None if init is None else numpy_helper.to_array(init)


def _constants_to_initializers(g):
    """``Constant`` nodes holding a tensor (how paddle2onnx writes weights) become initializers."""
    for node in [n for n in g.graph.node if n.op_type == "Constant" and len(n.attribute) == 1
                 and n.attribute[0].name == "value"]:
        tensor = node.attribute[0].t
        tensor.name = node.output[0]
        g.graph.initializer.append(tensor)
        g.graph.node.remove(node)


def _bypass_identities(g):
    outputs = {o.name for o in g.graph.output}
    for node in [n for n in g.graph.node if n.op_type == "Identity" and n.output[0] not in outputs]:
        for consumer in g.consumers(node.output[0]):
            consumer.input[:] = [node.input[0] if i == node.output[0] else i for i in consumer.input]
        g.graph.node.remove(node)


def _bias_add(g, conv, channels):
    """``(Add node, float bias)`` when the only reader of ``conv``'s output is an Add of a
    constant with one value for each of the ``channels`` output channels (how paddle2onnx
    writes a bias), else ``(None, None)``."""
    users = g.consumers(conv.output[0])
    if len(conv.input) > 2 or len(users) != 1 or users[0].op_type != "Add":
        return None, None
    add = users[0]
    other = add.input[1] if add.input[0] == conv.output[0] else add.input[0]
    producer = g.producers().get(other)
    if producer is not None and producer.op_type == "Reshape":
        other = producer.input[0]
    bias = g.value(other)
    if bias is None or bias.size != channels:
        return None, None
    return add, bias.reshape(-1).astype("float32")


def _fold_bias(g, conv, add, bias):
    """Make tensor ``bias`` the third input of ``conv`` in place of the bias ``add``."""
    conv.input.append(bias)
    conv.output[0] = add.output[0]
    g.graph.node.remove(add)


def _quantize_weight(g, weight_name, record):
    g.graph.initializer.remove(g.initializers()[weight_name])
    g.add("DequantizeLinear",
          [g.const(weight_name + ".int8", record.codes), g.const(weight_name + ".scale", record.scales)],
          [weight_name], axis=record.axis)


def _clip(g, x, tag, grid):
    return g.add("Clip", [x, g.const(tag + ".low", np.float32(grid.scale * grid.bottom)),
                          g.const(tag + ".high", np.float32(grid.scale * grid.top))], [tag + ".clip"])


def _zero_point(g, tag, grid):
    return g.const(tag + ".zero_point", np.uint8(0) if grid.unsigned else np.int8(0))


def _unit_stride(g, conv, kernel):
    """A 1x1 ``conv`` of stride s > 1 without padding reads ``x[:, :, ::s, ::s]`` at stride 1
    instead: the same values. OpenVINO's (2025.1 to 2026.4) int8 1x1 strided kernel on AVX2
    without VNNI, run on more than one thread, writes wrong values at some pixels."""
    attrs = {a.name: a for a in conv.attribute}
    strides = list(attrs["strides"].ints) if "strides" in attrs else [1] * len(kernel)
    pads = list(attrs["pads"].ints) if "pads" in attrs else []
    auto_pad = attrs["auto_pad"].s.decode() if "auto_pad" in attrs else "NOTSET"
    if any(k != 1 for k in kernel) or all(s == 1 for s in strides) or any(pads) or \
            auto_pad not in ("NOTSET", "VALID"):
        return
    tag, axes = conv.output[0] + ".unit_stride", list(range(2, 2 + len(kernel)))
    ints = lambda name, values: g.const(f"{tag}.{name}", np.array(values, "int64"))
    conv.input[0] = g.add("Slice", [conv.input[0], ints("starts", [0] * len(axes)),
                                    ints("ends", [np.iinfo(np.int64).max] * len(axes)),
                                    ints("axes", axes), ints("steps", strides)], [tag])
    attrs["strides"].ints[:] = [1] * len(kernel)


def _quantize_input(g, node, tag, grid):
    """Put Q/DQ (and a Clip, or the graph computing a dynamic scale) on ``node``'s data input."""
    x = node.input[0]
    if grid.scale is None:
        absmax = g.add("ReduceMax", [g.add("Abs", [x], [tag + ".abs"])], [tag + ".absmax"], keepdims=0)
        floor = g.add("Max", [absmax, g.const(tag + ".eps", np.float32(EPS))], [tag + ".floor"])
        scale = g.add("Div", [floor, g.const(tag + ".qmax", np.float32(grid.top))], [tag + ".scale"])
    else:
        scale = g.const(tag + ".scale", np.float32(grid.scale))
        if grid.bits != 8:
            x = _clip(g, x, tag, grid)
    zero = _zero_point(g, tag, grid)
    q = g.add("QuantizeLinear", [x, scale, zero], [tag + ".q"])
    node.input[0] = g.add("DequantizeLinear", [q, scale, zero], [tag + ".dq"])


def _sum_feeds_only_quantizers(g, name):
    """Whether tensor ``name`` is read by one ``Add`` only, whose output (after a ``Relu``, if
    one reads it) is read by ``QuantizeLinear`` nodes only."""
    readers = g.consumers(name)
    if len(readers) != 1 or readers[0].op_type != "Add":
        return False
    after = [n for n in g.consumers(readers[0].output[0]) if n.op_type != "Shape"]
    if len(after) == 1 and after[0].op_type == "Relu":
        after = [n for n in g.consumers(after[0].output[0]) if n.op_type != "Shape"]
    return bool(after) and all(_quantizes(g, n) for n in after)


def _quantizes(g, node):
    """Whether ``node`` is a QuantizeLinear, or the :func:`_unit_stride` Slice before ones."""
    if node.op_type == "Slice" and node.output[0].endswith(".unit_stride"):
        return all(n.op_type == "QuantizeLinear" for n in g.consumers(node.output[0]))
    return node.op_type == "QuantizeLinear"


def _quantize_output(g, conv, tag, record):
    """Put Q/DQ (and, where OpenVINO needs it, ``Max(y, lowest float32)``: module docstring)
    on ``conv``'s output, after its bias ``Add`` if it has one."""
    add, _ = _bias_add(g, conv, record.codes.shape[record.axis])
    y = add.output[0] if add is not None else conv.output[0]
    readers, fused = g.consumers(y), _sum_feeds_only_quantizers(g, y)
    grid = record.output
    scale, zero = g.const(tag + ".scale", np.float32(grid.scale)), _zero_point(g, tag, grid)
    out = g.add("DequantizeLinear", [g.add("QuantizeLinear", [y, scale, zero], [tag + ".q"]), scale, zero],
                [tag + ".dq"])
    if fused:
        out = g.add("Max", [out, g.const(tag + ".lowest", np.finfo(np.float32).min)], [tag + ".max"])
    for reader in readers:
        reader.input[:] = [out if i == y else i for i in reader.input]


def _int32_bias(bias, record, out_scale):
    """``(int32 codes, scales)`` of ``bias`` with step ``s_x * s_w`` per channel, or None
    where a code overflows int32 or the rounding moves an output by more than
    ``BIAS_TOLERANCE * out_scale``."""
    scales = (np.float32(record.input.scale) * record.scales).astype("float32")
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        codes = np.round(bias / scales)
    if not np.all(np.isfinite(codes)) or np.abs(codes).max(initial=0) > INT32_MAX:
        return None
    rounded = (codes * scales).astype("float32")
    if np.abs(rounded - bias).max(initial=0) > BIAS_TOLERANCE * out_scale:
        return None
    return codes.astype("int32"), scales


def _output_quantizer(g, name):
    """``(scale, zero point, direct)``: the input names of the QuantizeLinear nodes, all with
    one static scale, that tensor ``name`` feeds (``direct``) or reaches through one or more
    single-consumer ``MONOTONE`` ops (``Shape`` readers aside), else None."""
    end, steps = name, 0
    while True:
        users = [u for u in g.consumers(end) if u.op_type != "Shape"]  # Shape reads no values
        if len(users) != 1 or users[0].op_type not in MONOTONE or users[0].input[0] != end:
            break
        end, steps = users[0].output[0], steps + 1
    if not users or any(u.op_type != "QuantizeLinear" for u in users):
        return None
    if len({(u.input[1], u.input[2]) for u in users}) != 1 or g.value(users[0].input[1]) is None:
        return None
    return users[0].input[1], users[0].input[2], steps == 0


def _int8_conv(g, conv, record):
    """Shape ``conv`` (static input scale) as DQ -> Conv(int32 bias) -> Q/DQ, which
    onnxruntime runs as an int8 ``QLinearConv``, where the int32 bias stays within
    ``BIAS_TOLERANCE`` of an output step (module docstring).
    Elsewhere its float bias ``Add`` stays: folded into the Conv, onnxruntime would
    quantize it to int32 itself."""
    add, bias = _bias_add(g, conv, record.codes.shape[record.axis])
    out = _output_quantizer(g, add.output[0] if add is not None else conv.output[0])
    if out is None:
        return
    scale, zero, direct = out
    if add is not None:
        int32 = _int32_bias(bias, record, float(g.value(scale)))
        if int32 is None:
            return
        record.bias_shift = int32[0].astype("float64") * int32[1] - bias
        tag = conv.output[0] + ".bias"
        _fold_bias(g, conv, add, g.add(
            "DequantizeLinear", [g.const(tag + ".int32", int32[0]), g.const(tag + ".scale", int32[1])],
            [tag + ".dq"], axis=0))
    if direct:
        return
    first = next(u for u in g.consumers(conv.output[0]) if u.op_type != "Shape")
    tag = conv.output[0]
    q = g.add("QuantizeLinear", [tag, scale, zero], [tag + ".q"])
    first.input[0] = g.add("DequantizeLinear", [q, scale, zero], [tag + ".dq"])


def _drop_unused(g):
    """Remove nodes whose outputs nothing reads, then initializers nothing reads."""
    outputs = {o.name for o in g.graph.output}
    while True:
        used = {i for n in g.graph.node for i in n.input} | outputs
        dead = [n for n in g.graph.node if not any(o in used for o in n.output)]
        if not dead:
            break
        for n in dead:
            g.graph.node.remove(n)
    for init in [i for i in g.graph.initializer if i.name not in used]:
        g.graph.initializer.remove(init)


def _sort_topologically(g):
    available = {i.name for i in g.graph.input} | {i.name for i in g.graph.initializer} | {""}
    ordered, pending = [], list(g.graph.node)
    while pending:
        ready = [n for n in pending if all(i in available for i in n.input)]
        if not ready:
            raise RuntimeError("export: the rewritten ONNX graph has a cycle or a dangling input")
        ordered += ready
        for n in ready:
            available.update(n.output)
        pending = [n for n in pending if not any(n is r for r in ready)]
    del g.graph.node[:]
    g.graph.node.extend(ordered)


def quantize_graph(graph, layers):
    """Rewrite ``graph`` in place; ``layers`` maps weight initializer names to records with
    ``codes, scales, axis, input, output`` (see slimhub.quant.exporters.Int8Layer). A record
    whose bias is stored on the int32 grid gets ``bias_shift``, the change per channel."""
    g = _Graph(graph)
    _constants_to_initializers(g)
    _bypass_identities(g)
    missing = sorted(set(layers) - set(g.initializers()))
    if missing:
        raise RuntimeError(f"export: paddle2onnx renamed or dropped the weights {missing[:5]}")
    users = {}
    for node in list(g.graph.node):
        if len(node.input) > 1 and node.input[1] in layers:
            users.setdefault(node.input[1], []).append(node)
    static_convs = []  # convs with a static input scale: int8 kernels can run them
    for weight_name, record in layers.items():
        for i, node in enumerate(users.get(weight_name, [])):
            node.name = node.name or f"{weight_name}.op{i}"
            if node.op_type == "Conv" and record.input.scale is not None:
                _unit_stride(g, node, record.codes.shape[2:])
            _quantize_input(g, node, f"{weight_name}.input{i}", record.input)
            if node.op_type == "Conv" and record.input.scale is not None:
                static_convs.append((node, record))
            elif node.op_type == "Conv":
                add, bias = _bias_add(g, node, record.codes.shape[record.axis])
                if add is not None:
                    _fold_bias(g, node, add, g.const(node.output[0] + ".bias", bias))
        _quantize_weight(g, weight_name, record)
    for weight_name, record in layers.items():
        for i, node in enumerate(users.get(weight_name, [])):
            if node.op_type == "Conv" and record.output is not None:
                _quantize_output(g, node, f"{weight_name}.output{i}", record)
    for conv, record in static_convs:
        _int8_conv(g, conv, record)
    _drop_unused(g)
    _sort_topologically(g)
