"""ONNX int8 export: int8 weights, learned scales, onnxruntime outputs, size."""
import copy
import os

import numpy as np
import onnx
import onnxruntime as ort
import paddle
import pytest
from onnx import numpy_helper
from paddle import nn
from paddle.nn import functional as F

from quant_models import SPEC, assert_equal_but_rare_flips, batch, qat_trained, small_net
from slimhub.quant import export, quantize, strip_quant


def session(path, optimized_path=None):
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if optimized_path:
        options.optimized_model_filepath = optimized_path
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def run(path, x):
    return session(path).run(None, {"x": x})[0]


WEIGHT_QMAX = 63  # the default target, "x86": 7-bit weights, exact on every x86 CPU


def fq(x, scale):
    return np.clip(np.round(x / scale), -127, 127) * scale


def weight_codes(w, axis, bound=WEIGHT_QMAX):
    other = tuple(a for a in range(w.ndim) if a != axis)
    scale = np.abs(w).max(axis=other, keepdims=True) / np.float32(bound)
    return np.clip(np.round(w / scale), -bound, bound), scale.reshape(-1)


def int32_bias(bias, grid, s_y):
    """The bias an int8 runtime adds: rounded to the int32 grid where that moves no output
    by more than 1% of the output step ``s_y``, else the float bias (that conv then runs in
    float)."""
    rounded = np.round(bias / grid) * grid
    return rounded if np.abs(rounded - bias).max() <= 0.01 * s_y else bias


def int8_reference(model, x):
    """What an int8 runtime computes for ``small_net``, from the QAT model's raw parameters:
    inputs quantized with the learned scales, int8 weights, BatchNorm folded into the conv
    (``m = gamma / sqrt(var + eps)`` scales each channel) and the folded conv bias on the
    int32 grid ``s_input * s_weight * |m|`` (see ``int32_bias``); Linear biases stay float."""
    h = x
    for conv, bn, after in ((model[0], model[1], model[3]), (model[3], model[4], model[8])):
        s_x = np.float32(conv.activation_quanter.scale.item())
        codes, s_w = weight_codes(conv.weight.numpy(), 0)
        m = bn.weight.numpy() / np.sqrt(bn._variance.numpy() + bn._epsilon)
        bias = conv.bias.numpy() * m + bn.bias.numpy() - bn._mean.numpy() * m
        bias = int32_bias(bias, s_x * s_w * np.abs(m), np.float32(after.activation_quanter.scale.item()))
        weight = codes * (s_w * m).reshape(-1, 1, 1, 1)
        h = F.conv2d(paddle.to_tensor(fq(h, s_x).astype("float32")),
                     paddle.to_tensor(weight.astype("float32")), paddle.to_tensor(bias.astype("float32")),
                     padding=1)
        h = F.relu(h).numpy()
    h = F.max_pool2d(paddle.to_tensor(h), 2).numpy().reshape(len(x), -1)
    for fc, relu in ((model[8], True), (model[10], False)):
        s_x = np.float32(fc.activation_quanter.scale.item())
        codes, s_w = weight_codes(fc.weight.numpy(), 1)
        h = fq(h, s_x) @ (codes * s_w) + fc.bias.numpy()
        h = np.maximum(h, 0) if relu else h
    return h


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    folder = tmp_path_factory.mktemp("onnx")
    model = qat_trained()
    int8 = export(model, str(folder / "int8"), SPEC, format="onnx_int8")[0]
    fp32 = export(strip_quant(copy.deepcopy(model)), str(folder / "fp32"), SPEC, format="onnx")[0]
    return model, int8, fp32, folder


def test_int8_onnx_matches_the_int8_reference_and_the_qat_model(exported):
    model, int8, _, _ = exported
    x = batch(16, seed=5)
    out = run(int8, x)
    assert_equal_but_rare_flips(out, int8_reference(model, x))
    qat = model(paddle.to_tensor(x)).numpy()
    assert (out.argmax(1) == qat.argmax(1)).mean() >= 0.9


def test_int8_weights_are_the_qat_codes_folded(exported):
    model, int8, _, _ = exported
    graph = onnx.load(int8).graph
    dequantized = {node.output[0]: node.input for node in graph.node if node.op_type == "DequantizeLinear"}
    inits = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    int8_weights = [inits[inputs[0]] for inputs in dequantized.values()
                    if inputs[0] in inits and inits[inputs[0]].dtype == np.int8]
    assert len(int8_weights) == 4 and not any(a.dtype == np.float32 and a.size > 1000 for a in inits.values())
    conv1 = next(a for a in int8_weights if a.shape == (16, 3, 3, 3))
    bn = model[1]
    codes, _ = weight_codes(model[0].weight.numpy(), 0)
    sign = np.where(bn.weight.numpy() < 0, -1, 1).reshape(-1, 1, 1, 1)
    np.testing.assert_array_equal(conv1, codes * sign)


def test_int8_file_is_a_quarter_of_float32(exported):
    _, int8, fp32, _ = exported
    ratio = os.path.getsize(int8) / os.path.getsize(fp32)
    assert ratio <= 0.27, ratio


def test_onnxruntime_runs_the_convolutions_in_int8(exported):
    _, int8, _, folder = exported
    optimized = str(folder / "optimized.onnx")
    session(int8, optimized)
    ops = [node.op_type for node in onnx.load(optimized).graph.node]
    assert ops.count("QLinearConv") == 2


def test_dynamic_activation_scales_match_the_qat_model_exactly(tmp_path):
    model = qat_trained(steps=1, activation_quantize_type="abs_max", weight_quantize_type="abs_max")
    path = export(model, str(tmp_path / "dyn"), SPEC, format="onnx_int8")[0]
    x = batch(16, seed=7)
    assert_equal_but_rare_flips(run(path, x), model(paddle.to_tensor(x)).numpy())


def test_a_channel_with_a_dead_input_keeps_its_exact_bias(tmp_path):
    """A BatchNorm channel whose input was always zero has a near-zero running variance:
    folded, its weights are huge, so the int32 bias grid ``s_x * s_w * |m|`` is far coarser
    than the output step. The channel outputs its bias on every pixel; rounded to that grid
    it would be wrong everywhere, so the file must keep it exact."""
    paddle.seed(3)
    net = nn.Sequential(nn.Conv2D(3, 8, 3, padding=1), nn.BatchNorm2D(8), nn.ReLU(),
                        nn.Conv2D(8, 8, 3, padding=1, groups=8), nn.BatchNorm2D(8), nn.ReLU(),
                        nn.Flatten(), nn.Linear(8 * 16 * 16, 10))
    model = quantize(net)  # channel-wise weights, moving-average activation scales
    for seed in range(3):  # learn the activation scales
        model(paddle.to_tensor(batch(8, seed=seed)))
    first, depthwise = model[1], model[4]
    first.weight.set_value(np.r_[0.0, np.ones(7)].astype("float32"))  # channel 0 of the first
    first.bias.set_value(np.r_[-1.0, np.zeros(7)].astype("float32"))  # block is always 0 ...
    variance = depthwise._variance.numpy()
    variance[0] = 1e-35  # ... so its depthwise channel saw no variance
    depthwise._variance.set_value(variance)
    depthwise._mean.set_value(np.zeros(8, "float32") + model[3].bias.numpy())
    s_y = model[7].activation_quanter.scale.item()
    depthwise.bias.set_value(np.r_[10.4 * s_y, np.zeros(7)].astype("float32"))
    model.eval()
    x = batch(8, seed=9)
    qat = model(paddle.to_tensor(x)).numpy()
    hidden = model[:6](paddle.to_tensor(x)).numpy()
    np.testing.assert_allclose(hidden[:, 0], 10.4 * s_y, rtol=1e-5)  # the bias, on every pixel
    path = export(model, str(tmp_path / "dead"), SPEC, format="onnx_int8")[0]
    assert_equal_but_rare_flips(run(path, x), qat)


def test_export_errors(tmp_path):
    with pytest.raises(ValueError, match="no quantized layers"):
        export(small_net(), str(tmp_path / "a"), SPEC, format="onnx_int8")
    untrained = quantize(small_net())
    with pytest.raises(ValueError, match="layer '0' has no activation scale"):
        export(untrained, str(tmp_path / "b"), SPEC, format="onnx_int8")
    with pytest.raises(TypeError, match="use 'onnx_int8'"):
        export(untrained, str(tmp_path / "c"), SPEC, format="onnx")
    with pytest.raises(TypeError, match="'inference' is for float networks.*'onnx_int8'"):
        export(untrained, str(tmp_path / "d"), SPEC, format="inference")
    assert os.listdir(tmp_path) == []
