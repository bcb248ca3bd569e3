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

from quant_models import (RESIDUAL_OUTPUTS, SPEC, assert_equal_but_rare_flips, batch, qat_residual,
                          qat_trained, small_net)
from slimhub.deploy import load
from slimhub.quant import export, quantize, strip_quant
from slimhub.quant.wrap import output_quantized_layers


def session(path, optimized_path=None):
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if optimized_path:
        options.optimized_model_filepath = optimized_path
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def run(path, x):
    return session(path).run(None, {"x": x})[0]


def optimized_ops(path, folder):
    """The op types of the graph onnxruntime runs for ``path`` (default optimizations)."""
    optimized = str(folder / "optimized.onnx")
    session(path, optimized)
    return [node.op_type for node in onnx.load(optimized).graph.node]


WEIGHT_QMAX = 63  # the default target, "x86": 7-bit weights, exact on every x86 CPU


def fq(x, scale, unsigned=False):
    """The 8-bit activation fake quantizer: codes -128..127, or 0..255 on an unsigned grid."""
    low, high = (0, 255) if unsigned else (-128, 127)
    return np.clip(np.round(x / scale), low, high) * scale


def weight_codes(w, axis, bound=WEIGHT_QMAX):
    other = tuple(a for a in range(w.ndim) if a != axis)
    scale = np.abs(w).max(axis=other, keepdims=True) / np.float32(bound)
    return np.clip(np.round(w / scale), -bound, bound), scale.reshape(-1)


def int32_bias(bias, grid, s_y):
    """``(bias an int8 runtime adds, whether it is on the int32 grid)``: rounded to the grid
    where that moves no output by more than 10% of the output step ``s_y``, else the float
    bias (that conv then runs in float)."""
    rounded = np.round(bias / grid) * grid
    fits = np.abs(rounded - bias).max() <= 0.1 * s_y
    return (rounded if fits else bias), fits


CONVS = ((0, 1, 3), (3, 4, 8))  # small_net: (conv, its BatchNorm, the next quantized layer)


def folded_conv(model, conv_index):
    """``(int8 codes, weight scales, |m|, folded float bias)`` of a conv of ``small_net``."""
    conv, bn = model[conv_index], model[conv_index + 1]
    codes, s_w = weight_codes(conv.weight.numpy(), 0)
    m = bn.weight.numpy() / np.sqrt(bn._variance.numpy() + bn._epsilon)
    return codes * np.sign(m).reshape(-1, 1, 1, 1), s_w, np.abs(m), \
        conv.bias.numpy() * m + bn.bias.numpy() - bn._mean.numpy() * m


def conv_bias(model, conv_index, after_index):
    """``int32_bias`` of a conv of ``small_net``."""
    s_x = np.float32(model[conv_index].activation_quanter.scale.item())
    _, s_w, m, bias = folded_conv(model, conv_index)
    return int32_bias(bias, s_x * s_w * m, np.float32(model[after_index].activation_quanter.scale.item()))


def int8_reference(model, x):
    """What an int8 runtime computes for ``small_net``, from the QAT model's raw parameters:
    inputs quantized with the learned scales (the image on the symmetric grid, every input
    after a ReLU on the unsigned one), int8 weights, BatchNorm folded into the conv
    (``m = gamma / sqrt(var + eps)`` scales each channel) and the folded conv bias on the
    int32 grid ``s_input * s_weight * |m|`` (see ``int32_bias``); Linear biases stay float."""
    h = x
    for conv_index, _, after_index in CONVS:
        s_x = np.float32(model[conv_index].activation_quanter.scale.item())
        codes, s_w, m, _ = folded_conv(model, conv_index)
        bias, _ = conv_bias(model, conv_index, after_index)
        weight = codes * (s_w * m).reshape(-1, 1, 1, 1)
        h = F.conv2d(paddle.to_tensor(fq(h, s_x, unsigned=conv_index > 0).astype("float32")),
                     paddle.to_tensor(weight.astype("float32")), paddle.to_tensor(bias.astype("float32")),
                     padding=1)
        h = F.relu(h).numpy()
    h = F.max_pool2d(paddle.to_tensor(h), 2).numpy().reshape(len(x), -1)
    for fc, relu in ((model[8], True), (model[10], False)):
        s_x = np.float32(fc.activation_quanter.scale.item())
        codes, s_w = weight_codes(fc.weight.numpy(), 1)
        h = fq(h, s_x, unsigned=True) @ (codes * s_w) + fc.bias.numpy()
        h = np.maximum(h, 0) if relu else h
    return h


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    folder = tmp_path_factory.mktemp("onnx")
    model = qat_trained()
    int8 = export(model, str(folder / "int8"), SPEC, format="onnx_int8")[0]
    fp32 = export(strip_quant(copy.deepcopy(model)), str(folder / "fp32"), SPEC, format="onnx")[0]
    return model, int8, fp32, folder


def test_activation_grids_are_unsigned_after_relu(exported):
    model = exported[0]
    grids = [model[i].activation_quanter.is_unsigned() for i in (0, 3, 8, 10)]
    assert grids == [False, True, True, True]  # the image has both signs, the rest follow ReLUs


def test_int8_onnx_matches_the_int8_reference_and_the_qat_model(exported):
    model, int8, _, _ = exported
    x = batch(16, seed=5)
    out = run(int8, x)
    assert_equal_but_rare_flips(out, int8_reference(model, x))
    qat = model(paddle.to_tensor(x)).numpy()
    assert (out.argmax(1) == qat.argmax(1)).mean() >= 0.9


def test_the_file_is_checked_against_the_qat_model_with_its_int32_biases(exported):
    """The int32 grid moves a folded bias by up to 10% of an output step; on a deep net that
    flips a few argmaxes, so export compares the file with the QAT model carrying exactly
    those shifts (on the BatchNorm bias) and leaves the caller's model untouched."""
    from slimhub.quant.exporters import _int8_onnx
    model = exported[0]
    before = {k: v.numpy().copy() for k, v in model.state_dict().items()}
    _, computed = _int8_onnx(model, SPEC)
    for conv_index, bn_index, after_index in CONVS:
        rounded, fits = conv_bias(model, conv_index, after_index)
        shift = (rounded - folded_conv(model, conv_index)[3]) if fits else 0
        np.testing.assert_allclose(computed[bn_index].bias.numpy(), model[bn_index].bias.numpy() + shift,
                                   rtol=0, atol=1e-6)
    assert all(np.array_equal(v.numpy(), before[k]) for k, v in model.state_dict().items())
    x = batch(16, seed=5)
    assert_equal_but_rare_flips(run(exported[1], x), computed(paddle.to_tensor(x)).numpy())


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


def test_onnxruntime_runs_in_int8_the_convolutions_whose_bias_fits_int32(exported):
    model, int8, _, folder = exported
    ops = optimized_ops(int8, folder)
    fits = [conv_bias(model, conv, after)[1] for conv, _, after in CONVS]
    assert any(fits) and ops.count("QLinearConv") == sum(fits)


def test_post_relu_convs_run_in_int8_with_no_float_relu_between_them(tmp_path):
    """Inputs after a ReLU are quantized to uint8 with zero point 0, so onnxruntime drops
    the ReLU and chains QLinearConv to QLinearConv."""
    paddle.seed(4)
    net = nn.Sequential(nn.Conv2D(3, 8, 3, padding=1, bias_attr=False), nn.ReLU(),
                        nn.Conv2D(8, 8, 3, padding=1, bias_attr=False), nn.ReLU(),
                        nn.Conv2D(8, 8, 3, padding=1, bias_attr=False), nn.ReLU(),
                        nn.Flatten(), nn.Linear(8 * 16 * 16, 10))
    model = quantize(net)
    for seed in range(3):  # learn the activation scales
        model(paddle.to_tensor(batch(8, seed=seed)))
    model.eval()
    path = export(model, str(tmp_path / "relu"), SPEC, format="onnx_int8")[0]
    graph = onnx.load(path).graph
    inits = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    zero_points = [inits[n.input[2]].dtype for n in graph.node if n.op_type == "QuantizeLinear"]
    assert zero_points.count(np.uint8) >= 3 and np.int8 in zero_points  # the image is signed
    ops = optimized_ops(path, tmp_path)
    first = ops.index("QLinearConv")
    assert ops[first:first + 4] == ["QLinearConv"] * 3 + ["Transpose"]  # nothing in float between
    assert "Clip" not in ops
    x = batch(16, seed=6)
    assert_equal_but_rare_flips(run(path, x), model(paddle.to_tensor(x)).numpy())


@pytest.fixture(scope="module")
def residual(tmp_path_factory):
    folder = tmp_path_factory.mktemp("residual")
    model = qat_residual()
    return model, export(model, str(folder / "int8"), SPEC, format="onnx_int8")[0], folder


def test_residual_blocks_run_in_int8_and_equal_the_qat_model(residual):
    """The convs feeding a residual sum quantize their outputs (after the BatchNorm), so
    onnxruntime runs every conv but the stem (whose output also feeds the first sum
    unquantized) as QLinearConv; both runtimes compute the QAT model. Only the sum that
    nothing but quantizers read (before the downsample block) needs the ``Max`` that keeps
    OpenVINO from skipping a rounding."""
    model, path, folder = residual
    assert sorted(output_quantized_layers(model)) == RESIDUAL_OUTPUTS
    assert optimized_ops(path, folder).count("QLinearConv") == 7
    assert [node.op_type for node in onnx.load(path).graph.node].count("Max") == 1
    x = batch(32, seed=5)
    expected = model(paddle.to_tensor(x)).numpy()
    for runtime in ("onnxruntime", "openvino"):
        assert_equal_but_rare_flips(load(path, runtime, threads=None)(x), expected)


def test_the_strided_shortcut_reads_a_subsampled_input_at_stride_1(residual):
    """The downsample block's 1x1 stride-2 shortcut is written as a step-2 Slice before its
    quantizer and a stride-1 conv (OpenVINO's int8 1x1 strided kernel on AVX2 without VNNI
    corrupts some pixels when it runs on two threads); repeated multi-threaded runs in both
    runtimes still compute the QAT model."""
    model, path, _ = residual
    graph = onnx.load(path).graph
    producers = {o: n for n in graph.node for o in n.output}
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    pointwise = [n for n in graph.node if n.op_type == "Conv"
                 and [a.ints for a in n.attribute if a.name == "kernel_shape"][0] == [1, 1]]
    assert len(pointwise) == 1
    assert [a.ints for a in pointwise[0].attribute if a.name == "strides"][0] == [1, 1]
    quantizer = producers[producers[pointwise[0].input[0]].input[0]]
    sliced = producers[quantizer.input[0]]
    assert (quantizer.op_type, sliced.op_type) == ("QuantizeLinear", "Slice")
    assert inits[sliced.input[4]].tolist() == [2, 2] and inits[sliced.input[3]].tolist() == [2, 3]
    x = batch(32, seed=11)
    expected = model(paddle.to_tensor(x)).numpy()
    for runtime in ("onnxruntime", "openvino"):
        predictor = load(path, runtime, threads=2)
        for _ in range(3):
            assert_equal_but_rare_flips(predictor(x), expected)


def test_a_dead_channel_feeding_a_residual_sum_keeps_its_exact_bias(tmp_path):
    """As below, for a conv whose output has its own quantizer: the float bias stays and
    both runtimes still compute the QAT model."""
    model = qat_residual()
    block = model[3]
    weight = block.conv2.weight.numpy()
    weight[0] = 0  # output channel 0 is always 0 ...
    block.conv2.weight.set_value(weight)
    variance = block.bn2._variance.numpy()
    variance[0] = 1e-35  # ... so its BatchNorm saw no variance
    block.bn2._variance.set_value(variance)
    shift = block.bn2.bias.numpy()
    shift[0] = 10.4 * block.bn2.output_quanter.scale.item()  # and it outputs its bias everywhere
    block.bn2.bias.set_value(shift)
    path = export(model, str(tmp_path / "dead"), SPEC, format="onnx_int8")[0]
    x = batch(32, seed=9)
    expected = model(paddle.to_tensor(x)).numpy()
    for runtime in ("onnxruntime", "openvino"):
        assert_equal_but_rare_flips(load(path, runtime, threads=None)(x), expected)


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
