"""Deploy a fake-quantized network: Paddle inference with quantize/dequantize ops, or
ONNX with int8 weights and QuantizeLinear/DequantizeLinear carrying the learned scales.

Both formats start from the same deployment form of the network (eval mode):

- each quantized layer's weight becomes its int8 codes ``q = clip(round(W / s), -qmax, qmax)``
  and per-output-channel scales ``s`` (a per-tensor scale is repeated per channel);
- a BatchNorm fed only by a quantized conv is folded into it: ``m = gamma / sqrt(var + eps)``
  multiplies the channel's scale (codes change sign where ``m < 0``) and the bias becomes
  ``b * m + beta - mean * m``; the dequantized weights are therefore the folded ones
  and the int8 codes are exactly those QAT trained with;
- each quantized layer's input keeps its activation quanter: the frozen learned scale and
  grid, signed or unsigned (moving_average_abs_max, calibrated PTQ scales), or the
  dynamic per-batch abs max (abs_max);
- a conv whose output (or whose folded BatchNorm's output) has an output quanter (it
  feeds a residual sum) keeps that quantizer on its output.

Formats (registered in :data:`slimhub.export.EXPORTERS`; ``path`` is a file prefix):

- ``"paddle_int8"``: ``path.pdmodel`` + ``path.pdiparams`` (legacy program format, which
  ``paddle.inference`` loads) with ``quantize_linear`` / ``dequantize_linear`` ops; weights
  are kept as float tensors holding the int8 codes, so the file is as large as float32.
- ``"onnx_int8"``: ``path.onnx``, weights stored as int8 initializers + DequantizeLinear
  (per channel), inputs of quantized layers through QuantizeLinear/DequantizeLinear with
  the learned scales; about a quarter of the float32 size; runs in onnxruntime.
- ``"onnx"``: ``path.onnx``, float32 with BatchNorm folded (the float baseline).
- ``"openvino_int8"`` / ``"openvino"``: the same two graphs as OpenVINO IR
  (``path.xml`` + ``path.bin``), converted by OpenVINO; float weights stay float32.

paddle2onnx converts the float32 graph in a child process (it can abort the process on
unsupported programs and hides Python errors), and the int8 rewrite uses the onnx package.
"""
from __future__ import annotations

import multiprocessing
from copy import deepcopy
import os
import shutil
import tempfile
import traceback
from dataclasses import dataclass

import numpy as np
import onnx
import paddle
from paddle import nn
from paddle.base.layer_helper import LayerHelper
from paddle.nn import functional as F
from paddle.nn.quant.format import LinearDequanter, LinearQuanter

from slimhub.export import register_exporter
from slimhub.quant.fold_bn import bn_affine, folded_copy
from slimhub.quant.onnx_qdq import quantize_graph
from slimhub.quant.quanters import absmax, qmax, qmin, round_to_grid, scale_from_absmax
from slimhub.quant.wrap import (CHANNEL_AXIS, add_output_quanter, output_quantized_layers,
                                quantized_layers, replace_layer, wrap_layer)

ONNX_OPSET = 13  # per-axis DequantizeLinear


@dataclass
class Grid:
    """How an activation is quantized: the codes of a ``bits``-bit integer (``unsigned``:
    from 0) times ``scale`` (None: dynamic, the abs max of each input / qmax)."""

    scale: float | None
    bits: int
    unsigned: bool

    @property
    def top(self):
        """The largest code."""
        return qmax(self.bits, self.unsigned)

    @property
    def bottom(self):
        """The smallest code."""
        return qmin(self.bits, self.unsigned)


@dataclass
class Int8Layer:
    """The deployment form of one quantized layer."""

    codes: np.ndarray  # int8, the weight's shape
    scales: np.ndarray  # float32, one per output channel
    axis: int  # the output-channel axis of the weight
    weight_bits: int
    input: Grid
    output: Grid | None  # a quantized output (after the folded BatchNorm), else None
    bias_layer: str  # the layer whose bias is the folded bias: the folded BatchNorm, else the layer
    bias_shift: np.ndarray | None = None  # set by the ONNX rewrite: int32-grid bias - folded bias


def _weight_codes(layer):
    """``(int codes, per-channel scales)`` of a quantized layer's weight, as its quanter
    quantizes it (same float32 operations)."""
    quanter = layer.weight_quanter
    weight = layer.weight.detach()
    scale = quanter.get_scale(weight)
    limit = scale * qmax(quanter.bits)
    clipped = paddle.minimum(paddle.maximum(weight, -limit), limit)
    codes = paddle.round(clipped / scale).numpy()
    axis = CHANNEL_AXIS[nn.Conv2D if isinstance(layer, nn.Conv2D) else nn.Linear]
    channels = weight.shape[axis]
    scales = np.broadcast_to(scale.numpy().reshape(-1), (channels,)) if scale.size == 1 \
        else scale.numpy().reshape(-1)
    return codes, scales.astype("float32"), axis


def _grid(name, quanter, role):
    """The :class:`Grid` of layer ``name``'s ``role`` ("activation" or "output") quanter."""
    if quanter.dynamic:
        return Grid(None, quanter.bits, False)
    if not quanter.has_scale():
        raise ValueError(
            f"export: layer {name!r} has no {role} scale yet (moving_average_abs_max "
            "learns it in training); train at least one step or calibrate the network first")
    return Grid(float(quanter.scale.item()), quanter.bits, quanter.is_unsigned())


def deployment_form(network, input_spec):
    """``(float network with BatchNorm folded, {layer name: Int8Layer})`` for ``network``.

    The float network is a copy in eval mode whose quantized layers are plain
    Conv2D / Linear with folded float biases (their weights still unquantized).
    """
    quantized = quantized_layers(network)
    if not quantized:
        raise ValueError("export: the network has no quantized layers; quantize it "
                         "(slimhub.quant.quantize, QATCallback) or calibrate it first")
    folded, pairs = folded_copy(network, input_spec)
    bn_of = dict(pairs)
    original = dict(network.named_sublayers())
    outputs = output_quantized_layers(network)
    convs = {name for name, layer in quantized.items() if isinstance(layer, nn.Conv2D)}
    stray = sorted(set(outputs) - convs - {bn for conv, bn in pairs if conv in convs})
    if stray:
        raise ValueError(f"export: layers {stray[:5]} have output quanters but are neither quantized "
                         "convs nor BatchNorms folded into one")
    records = {}
    for name, layer in quantized.items():
        codes, scales, axis = _weight_codes(layer)
        if name in bn_of:
            m, _ = bn_affine(original[bn_of[name]])
            shape = [-1 if a == axis else 1 for a in range(codes.ndim)]
            codes = codes * np.where(m < 0, -1, 1).reshape(shape)
            codes = np.where((m == 0).reshape(shape), 0, codes)
            scales = np.where(m == 0, 1.0, scales * np.abs(m)).astype("float32")
        out_name = name if name in outputs else bn_of.get(name)
        records[name] = Int8Layer(
            codes=codes.astype("int8"), scales=scales, axis=axis,
            weight_bits=layer.weight_quanter.bits,
            input=_grid(name, layer.activation_quanter, "activation"),
            output=_grid(out_name, outputs[out_name].output_quanter, "output")
            if out_name in outputs else None,
            bias_layer=bn_of.get(name, name))
    return folded, records


def _dequantized(record):
    shape = [-1 if a == record.axis else 1 for a in range(record.codes.ndim)]
    return record.codes.astype("float32") * record.scales.reshape(shape)


def _set_weight(layer, value):
    """Give ``layer`` a new weight Parameter holding ``value``; returns its name."""
    weight = layer.create_parameter(list(value.shape), dtype="float32")
    weight.set_value(value)
    layer.weight = weight
    return weight.name


# ------------------------------------------------------------- paddle_int8
class _WeightDequanter(nn.Layer):
    """int8 codes (held as float) -> weights, via Paddle's ``dequantize_linear`` op."""

    def __init__(self, record):
        super().__init__()
        bound = qmax(record.weight_bits)
        self.dequant = LinearDequanter(record.scales * bound, np.zeros_like(record.scales),
                                       quant_axis=record.axis, bit_length=record.weight_bits)

    def forward(self, codes):
        return self.dequant(codes)


class _ActivationQDQ(nn.Layer):
    """Activation quantize/dequantize on a :class:`Grid`: Paddle's ``quantize_linear`` /
    ``dequantize_linear`` ops with the frozen scale (they saturate at the ``b``-bit codes;
    an unsigned ``b``-bit grid is the non-negative half of a ``b+1``-bit one, after a
    clip at 0), or for a dynamic scale Paddle's ``fake_quantize_dequantize_abs_max`` op
    (round half to even)."""

    def __init__(self, grid):
        super().__init__()
        self.grid = grid
        if grid.scale is not None:
            bits = grid.bits + 1 if grid.unsigned else grid.bits  # qmax(bits) == grid.top
            bound = [grid.scale * grid.top]
            self.quant = LinearQuanter(bound, [0.0], bit_length=bits)
            self.dequant = LinearDequanter(bound, [0.0], bit_length=bits)

    def forward(self, x):
        grid = self.grid
        if grid.scale is not None:
            return self.dequant(self.quant(F.relu(x) if grid.unsigned else x))
        if paddle.in_dynamic_mode():
            return round_to_grid(x, scale_from_absmax(absmax(x), grid.bits))
        # legacy program: Paddle's own dynamic abs-max quantize-dequantize op
        helper = LayerHelper("fake_quantize_dequantize_abs_max")
        out = helper.create_variable_for_type_inference(x.dtype)
        scale = helper.create_variable_for_type_inference(x.dtype)
        helper.append_op(type="fake_quantize_dequantize_abs_max", inputs={"X": x},
                         outputs={"Out": out, "OutScale": scale},
                         attrs={"bit_length": grid.bits, "round_type": 0})
        return out


@register_exporter("paddle_int8", runtimes=["paddle"])
def export_paddle_int8(network, prefix, input_spec):
    """Paddle inference program with quantize/dequantize ops (see module docstring)."""
    folded, records = deployment_form(network, input_spec)
    named = dict(folded.named_sublayers())
    for name, record in records.items():
        plain = named[name]
        plain.weight.set_value(record.codes.astype("float32"))
        wrapped = wrap_layer(plain, _WeightDequanter(record), _ActivationQDQ(record.input))
        if record.output is not None:
            add_output_quanter(wrapped, _ActivationQDQ(record.output))
        replace_layer(folded, name, wrapped)
    folded.eval()
    with paddle.pir_utils.OldIrGuard():
        paddle.jit.save(folded, prefix, input_spec=input_spec)
    return [prefix + ".pdmodel", prefix + ".pdiparams"], network


# -------------------------------------------------------------------- ONNX
def _convert(program, params, out, error_file):
    """Child process: paddle2onnx ``program`` -> ``out``; a Python error goes to ``error_file``."""
    os.environ["POLYGRAPHY_AUTOINSTALL_DEPS"] = "0"  # paddle2onnx must never pip-install
    try:
        import paddle2onnx

        model = paddle2onnx.export(program, params, save_file=None, opset_version=ONNX_OPSET,
                                   enable_optimize=False)
        if not model:
            raise RuntimeError("paddle2onnx produced no model")
        with open(out, "wb") as f:
            f.write(model)
    except BaseException:
        with open(error_file, "w") as f:
            f.write(traceback.format_exc())
        raise


def _float_onnx(network, input_spec, tmp_dir):
    """Save ``network`` (float, eval) with ``paddle.jit.save`` and convert it with
    paddle2onnx in a child process (forked where possible, so Paddle is not imported
    again); returns the loaded onnx model."""
    prefix = os.path.join(tmp_dir, "float")
    paddle.jit.save(network, prefix, input_spec=input_spec)
    program = prefix + ".json" if os.path.exists(prefix + ".json") else prefix + ".pdmodel"
    out, error_file = os.path.join(tmp_dir, "float.onnx"), os.path.join(tmp_dir, "error.txt")
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    child = multiprocessing.get_context(method).Process(
        target=_convert, args=(program, prefix + ".pdiparams", out, error_file))
    child.start()
    child.join()
    if child.exitcode != 0 or not os.path.exists(out) or os.path.getsize(out) == 0:
        detail = open(error_file).read()[-2000:] if os.path.exists(error_file) else \
            "it crashed; its own messages are above"
        raise RuntimeError(
            f"export: paddle2onnx failed to convert the float graph (exit code {child.exitcode}): {detail}")
    return onnx.load(out)


def _write_onnx(model, prefix):
    onnx.checker.check_model(model)
    onnx.save(model, prefix + ".onnx")
    return [prefix + ".onnx"]


def _float_network(network, input_spec):
    """A float copy of the float ``network`` with BatchNorm folded; a quantized one is refused."""
    if quantized_layers(network):
        raise TypeError("export: formats 'onnx' and 'openvino' are for float networks; this one is "
                        "quantized, use 'onnx_int8' or 'openvino_int8' (or 'paddle_int8')")
    return folded_copy(network, input_spec)[0]


def _int8_onnx(network, input_spec):
    """``(int8 QDQ onnx model, the network it computes)`` for the quantized ``network`` (see
    module docstring and :func:`with_int32_biases`)."""
    folded, records = deployment_form(network, input_spec)
    named = dict(folded.named_sublayers())
    by_weight = {_set_weight(named[name], _dequantized(r)): r for name, r in records.items()}
    tmp_dir = tempfile.mkdtemp(prefix=".tmp-onnx-")
    try:
        model = _float_onnx(folded, input_spec, tmp_dir)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    quantize_graph(model.graph, by_weight)
    return model, with_int32_biases(network, records)


def with_int32_biases(network, records):
    """A copy of ``network`` whose folded biases are the int32-grid biases of the int8 file
    (``records`` after the ONNX rewrite): each shift, at most ``BIAS_TOLERANCE`` of an output
    step per channel, is added to the bias of the folded BatchNorm (else of the layer). This
    is the network the int8 file computes, which its check compares it with."""
    shifted = {r.bias_layer: r.bias_shift for r in records.values() if r.bias_shift is not None}
    if not shifted:
        return network
    copy = deepcopy(network)
    named = dict(copy.named_sublayers())
    for name, shift in shifted.items():
        layer = named[name]
        if layer.bias is None:
            raise ValueError(f"export: layer {name!r} has no bias to hold the int32 bias of its int8 kernel")
        layer.bias.set_value((layer.bias.numpy().astype("float64") + shift).astype("float32"))
    return copy


def _float_onnx_of(network, input_spec):
    tmp_dir = tempfile.mkdtemp(prefix=".tmp-onnx-")
    try:
        return _float_onnx(_float_network(network, input_spec), input_spec, tmp_dir)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


def _write_openvino(model, prefix):
    """OpenVINO IR (``prefix.xml`` + ``prefix.bin``) of an onnx model; float weights stay float32."""
    import openvino as ov

    onnx_file = _write_onnx(model, prefix + ".tmp")[0]
    try:
        ov.save_model(ov.Core().read_model(onnx_file), prefix + ".xml", compress_to_fp16=False)
    finally:
        os.remove(onnx_file)
    return [prefix + ".xml", prefix + ".bin"]


@register_exporter("onnx", runtimes=["onnxruntime", "openvino"])
def export_onnx(network, prefix, input_spec):
    """Float32 ONNX with BatchNorm folded (the baseline for the int8 file)."""
    return _write_onnx(_float_onnx_of(network, input_spec), prefix), network


@register_exporter("onnx_int8", runtimes=["onnxruntime", "openvino"])
def export_onnx_int8(network, prefix, input_spec):
    """ONNX with int8 weights and the learned activation scales (see module docstring)."""
    model, computed = _int8_onnx(network, input_spec)
    return _write_onnx(model, prefix), computed


@register_exporter("openvino", runtimes=["openvino"])
def export_openvino(network, prefix, input_spec):
    """Float32 OpenVINO IR with BatchNorm folded."""
    return _write_openvino(_float_onnx_of(network, input_spec), prefix), network


@register_exporter("openvino_int8", runtimes=["openvino"])
def export_openvino_int8(network, prefix, input_spec):
    """OpenVINO IR of the ``onnx_int8`` graph (int8 weights, learned activation scales)."""
    model, computed = _int8_onnx(network, input_spec)
    return _write_openvino(model, prefix), computed
