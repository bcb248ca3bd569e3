"""Wrapping Conv2D/Linear with quanters, and BatchNorm folding."""
import copy

import numpy as np
import paddle
import pytest
from paddle import nn
from paddle.nn import functional as F

from slimhub.flops import flops
from slimhub.quant import conv_bn_pairs, fold_bn, quantize, quantized_layers, strip_quant
from slimhub.quant.wrap import QuantedConv2D, QuantedLinear

SPEC = [paddle.static.InputSpec([None, 3, 8, 8], "float32", "x")]


def net():
    paddle.seed(0)
    return nn.Sequential(
        nn.Conv2D(3, 6, 3, padding=1), nn.BatchNorm2D(6), nn.ReLU(),
        nn.Conv2D(6, 8, 3, padding=1, bias_attr=False), nn.BatchNorm2D(8), nn.ReLU(),
        nn.MaxPool2D(2), nn.Flatten(), nn.Linear(8 * 4 * 4, 5))


def randomize_bn(model, seed=0):
    rng = np.random.default_rng(seed)
    for layer in model.sublayers():
        if isinstance(layer, nn.BatchNorm2D):
            n = layer.weight.shape[0]
            layer.weight.set_value(rng.uniform(-2, 2, n).astype("float32"))  # some negative
            layer.bias.set_value(rng.normal(size=n).astype("float32"))
            layer._mean.set_value(rng.normal(size=n).astype("float32"))
            layer._variance.set_value(rng.uniform(0.2, 3, n).astype("float32"))


def x_batch(seed=0, shape=(2, 3, 8, 8)):
    return np.random.default_rng(seed).standard_normal(shape).astype("float32")


def numpy_fq(x, scale, bits=8):
    qmax = 2 ** (bits - 1) - 1
    return (np.clip(np.round(x / scale), -qmax, qmax) * scale).astype("float32")


def test_quantize_wraps_in_place_and_keeps_parameters():
    model = net()
    params = {k: id(v) for k, v in model.state_dict().items()}
    macs = flops(model, (3, 8, 8))
    quantize(model, skip=["0"])
    layers = quantized_layers(model)
    assert sorted(layers) == ["3", "8"]
    assert isinstance(layers["3"], QuantedConv2D) and isinstance(layers["8"], QuantedLinear)
    assert type(model[0]) is nn.Conv2D  # skipped
    state = model.state_dict()
    assert all(id(state[k]) == v for k, v in params.items())  # same Parameter objects, same keys
    assert sorted(set(state) - set(params)) == ["3.activation_quanter.scale", "3.activation_quanter.unsigned",
                                                "8.activation_quanter.scale", "8.activation_quanter.unsigned"]
    assert flops(model, (3, 8, 8)) == macs


def test_quantized_forward_equals_numpy_fake_quant_of_input_and_weight():
    conv = nn.Conv2D(3, 4, 3, padding=1)
    w, b = conv.weight.numpy(), conv.bias.numpy()
    model = quantize(nn.Sequential(conv), activation_quantize_type="abs_max",
                     weight_quantize_type="channel_wise_abs_max")
    x = x_batch()
    w_scale = np.abs(w).max(axis=(1, 2, 3), keepdims=True) / np.float32(63)  # 7-bit weights (x86)
    x_scale = np.float32(np.abs(x).max()) / np.float32(127)
    expected = F.conv2d(paddle.to_tensor(numpy_fq(x, x_scale)), paddle.to_tensor(numpy_fq(w, w_scale, 7)),
                        paddle.to_tensor(b), padding=1).numpy()
    np.testing.assert_allclose(model(paddle.to_tensor(x)).numpy(), expected, rtol=1e-5, atol=1e-5)


def test_linear_per_tensor_weight_quanter():
    linear = nn.Linear(6, 3)
    w, b = linear.weight.numpy(), linear.bias.numpy()
    model = quantize(nn.Sequential(linear), weight_quantize_type="abs_max",
                     activation_quantize_type="abs_max")
    x = x_batch(shape=(4, 6))
    per_tensor = lambda a, bits: numpy_fq(a, np.abs(a).max() / np.float32(2 ** (bits - 1) - 1), bits)  # noqa: E731
    expected = per_tensor(x, 8) @ per_tensor(w, 7) + b  # 8-bit inputs, 7-bit weights (target x86)
    np.testing.assert_allclose(model(paddle.to_tensor(x)).numpy(), expected, rtol=1e-5, atol=1e-5)


def test_gradients_reach_the_original_parameters():
    model = net()
    weight = model[3].weight
    quantize(model)
    model(paddle.to_tensor(x_batch())).sum().backward()
    assert model[3].weight is weight and weight.grad is not None
    assert float(np.abs(weight.grad.numpy()).sum()) > 0


def test_forward_hooks_move_to_the_wrapper():
    model = net()
    seen = []
    handle = model[8].register_forward_post_hook(lambda layer, inputs, output: seen.append(output.shape))
    quantize(model)
    model(paddle.to_tensor(x_batch()))
    assert seen == [[2, 5]]
    handle.remove()
    model(paddle.to_tensor(x_batch()))
    assert len(seen) == 1


def test_unknown_skip_pattern_is_an_error():
    model = net()
    with pytest.raises(ValueError, match="'conv1' matches no Conv2D/Linear"):
        quantize(model, skip=["conv1"])
    assert not quantized_layers(model)


def test_strip_quant_restores_the_float_network():
    model = net()
    model.eval()
    x = paddle.to_tensor(x_batch())
    expected = model(x).numpy()
    quantize(model, activation_quantize_type="abs_max")
    plain = strip_quant(copy.deepcopy(model))
    assert not quantized_layers(plain)
    np.testing.assert_allclose(plain(x).numpy(), expected, rtol=1e-6, atol=1e-6)


def test_fold_bn_keeps_outputs_and_removes_batchnorms():
    model = net()
    randomize_bn(model)
    model.eval()
    x = paddle.to_tensor(x_batch(1))
    expected = model(x).numpy()
    folded = fold_bn(model, SPEC)
    assert not any(isinstance(layer, nn.BatchNorm2D) for layer in folded.sublayers())
    np.testing.assert_allclose(folded(x).numpy(), expected, rtol=1e-5, atol=1e-5)
    # the original is untouched and the folded convs hold new parameters
    assert sum(isinstance(layer, nn.BatchNorm2D) for layer in model.sublayers()) == 2
    assert folded[0].weight.name != model[0].weight.name
    # conv 3 had no bias: folding gives it one (beta - mean * gamma / std)
    bn = model[4]
    std = np.sqrt(bn._variance.numpy() + bn._epsilon)
    np.testing.assert_allclose(folded[3].bias.numpy(),
                               bn.bias.numpy() - bn._mean.numpy() * bn.weight.numpy() / std, rtol=1e-5)


class SharedOutput(nn.Layer):
    """conv output feeds the BatchNorm and a residual sum: folding it would be wrong."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2D(3, 3, 3, padding=1)
        self.bn = nn.BatchNorm2D(3)
        self.conv2 = nn.Conv2D(3, 4, 1)
        self.bn2 = nn.BatchNorm2D(4)

    def forward(self, x):
        y = self.conv(x)
        return self.bn2(self.conv2(self.bn(y) + y))


def test_fold_bn_skips_a_conv_whose_output_is_also_used_elsewhere():
    model = SharedOutput()
    randomize_bn(model, seed=3)
    model.eval()
    assert conv_bn_pairs(model, SPEC) == [("conv2", "bn2")]
    x = paddle.to_tensor(x_batch(2))
    np.testing.assert_allclose(fold_bn(model, SPEC)(x).numpy(), model(x).numpy(), rtol=1e-5, atol=1e-5)


def test_fold_bn_refuses_a_quantized_network():
    model = quantize(net())
    with pytest.raises(TypeError, match="fake-quantized"):
        fold_bn(model, SPEC)
