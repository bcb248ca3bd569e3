"""Fake quantizers against the numpy formula, the STE gradient, the EMA recurrence and the
unsigned grid."""
import numpy as np
import paddle
import pytest

from slimhub.quant.quanters import (AbsMaxQuanter, ChannelWiseAbsMaxQuanter,
                                    MovingAverageAbsMaxQuanter, fake_quant, make_quanter)
from slimhub.quant.wrap import QuantConfig


def numpy_fake_quant(x, scale, bits):
    """Weights: q = clip(round(x / scale), -qmax, qmax); x_hat = q * scale (float32)."""
    qmax = 2 ** (bits - 1) - 1
    q = np.clip(np.round(x / scale), -qmax, qmax)
    return (q * scale).astype("float32"), q


def numpy_activation_quant(x, scale, bits, unsigned=False):
    """Static activation scales: every code of a ``bits``-bit integer,
    -2^(bits-1)..2^(bits-1)-1, or 0..2^bits-1 unsigned."""
    low, high = (0, 2 ** bits - 1) if unsigned else (-2 ** (bits - 1), 2 ** (bits - 1) - 1)
    return (np.clip(np.round(x / scale), low, high) * scale).astype("float32")


def rand(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype("float32")


@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize("with_grad", [False, True])
def test_abs_max_per_tensor_matches_formula(bits, with_grad):
    x = rand((2, 3, 5, 5))
    scale = np.float32(np.abs(x).max()) / np.float32(2 ** (bits - 1) - 1)
    expected, codes = numpy_fake_quant(x, scale, bits)
    out = AbsMaxQuanter(bits)(paddle.to_tensor(x, stop_gradient=not with_grad)).numpy()
    np.testing.assert_array_equal(np.round(out / scale), codes)
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-6 * np.abs(x).max())
    assert len(np.unique(codes)) <= 2 ** bits - 1


@pytest.mark.parametrize("shape,axis", [((4, 3, 3, 3), 0), ((5, 6), 1)])
def test_channel_wise_matches_formula_per_channel(shape, axis):
    w = rand(shape, seed=1)
    w[tuple(1 if a == axis else slice(None) for a in range(len(shape)))] *= 20  # one wide channel
    other = tuple(a for a in range(len(shape)) if a != axis)
    scale = (np.abs(w).max(axis=other, keepdims=True) / np.float32(127)).astype("float32")
    expected, codes = numpy_fake_quant(w, scale, 8)
    out = ChannelWiseAbsMaxQuanter(8, axis=axis)(paddle.to_tensor(w)).numpy()
    np.testing.assert_array_equal(np.round(out / scale), codes)
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-6 * np.abs(w).max())
    # every channel uses its full range: its largest magnitude maps to code 127
    assert (np.abs(codes).max(axis=other) == 127).all()


def test_ste_gradient_is_one_inside_zero_outside():
    quanter = MovingAverageAbsMaxQuanter(8)
    quanter.scale.set_value(paddle.to_tensor(0.1))  # range +-12.7
    quanter.eval()
    values = np.array([-20.0, -12.7, -3.04, 0.0, 5.55, 12.7, 12.71, 40.0], dtype="float32")
    x = paddle.to_tensor(values, stop_gradient=False)
    upstream = np.arange(1, 9, dtype="float32")
    (quanter(x) * paddle.to_tensor(upstream)).sum().backward()
    inside = (values >= np.float32(-12.8)) & (values <= np.float32(12.7))  # codes -128..127
    np.testing.assert_array_equal(x.grad.numpy(), upstream * inside)
    np.testing.assert_allclose(quanter(paddle.to_tensor(values)).numpy(),
                               numpy_activation_quant(values, np.float32(0.1), 8), atol=1e-6)


def test_ste_gradient_per_channel_scale():
    x = paddle.to_tensor(np.array([[1.0, -3.0], [0.5, 0.2]], "float32"), stop_gradient=False)
    scale = paddle.to_tensor(np.array([[2.0 / 127], [0.25 / 127]], "float32"))  # limits 2 and 0.25
    fake_quant(x, scale, 8).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [[1, 0], [0, 1]])


def test_moving_average_follows_ema_and_freezes_in_eval():
    rate, bits = 0.9, 8
    quanter = MovingAverageAbsMaxQuanter(bits, moving_rate=rate)
    quanter.train()
    batches = [rand((2, 8), seed=s) * m for s, m in enumerate([1.0, 3.0, 0.5, 2.0])]
    expected_scale = None
    for x in batches:
        current = np.float32(np.abs(x).max()) / np.float32(127)
        expected_scale = current if expected_scale is None else rate * expected_scale + (1 - rate) * current
        out = quanter(paddle.to_tensor(x)).numpy()
        assert quanter.scale.item() == pytest.approx(expected_scale, rel=1e-6)
        # the batch is quantized with the updated scale
        np.testing.assert_allclose(out, numpy_activation_quant(x, np.float32(expected_scale), bits),
                                   atol=1e-5 * np.abs(x).max())
    assert not quanter.is_unsigned()
    quanter.eval()
    frozen = quanter.scale.item()
    big = rand((2, 8), seed=9) * 100
    out = quanter(paddle.to_tensor(big)).numpy()
    assert quanter.scale.item() == frozen
    np.testing.assert_allclose(out, numpy_activation_quant(big, np.float32(frozen), bits), atol=1e-4)
    # clipped to the frozen range: codes -128..127
    assert out.max() == pytest.approx(127 * frozen, rel=1e-6)
    assert out.min() == pytest.approx(-128 * frozen, rel=1e-6)


def test_a_first_batch_without_negatives_chooses_the_unsigned_grid_for_good():
    rate = 0.9
    quanter = MovingAverageAbsMaxQuanter(8, moving_rate=rate)
    quanter.train()
    first = np.abs(rand((2, 8), seed=1)) * 3  # post-ReLU: never negative
    out = quanter(paddle.to_tensor(first)).numpy()
    scale = np.float32(first.max()) / np.float32(255)
    assert quanter.is_unsigned() and quanter.scale.item() == pytest.approx(scale, rel=1e-6)
    np.testing.assert_allclose(out, numpy_activation_quant(first, scale, 8, unsigned=True), atol=1e-6)
    assert np.round(out / scale).max() == 255  # the largest input takes the top code
    # a later batch with negative values: still unsigned, its scale follows max x (not max |x|)
    second = rand((2, 8), seed=2) * 5
    x = paddle.to_tensor(second, stop_gradient=False)
    out = quanter(x)
    scale = rate * scale + (1 - rate) * np.float32(second.max()) / np.float32(255)
    assert quanter.is_unsigned() and quanter.scale.item() == pytest.approx(scale, rel=1e-5)
    expected = numpy_activation_quant(second, np.float32(scale), 8, unsigned=True)
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-5)
    out.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), ((second >= 0) & (second <= 255 * scale)).astype("float32"))
    # the grid is part of the state: a fresh quanter given it computes the same in eval
    quanter.eval()
    restored = MovingAverageAbsMaxQuanter(8)
    restored.set_state_dict(quanter.state_dict())
    restored.eval()
    np.testing.assert_array_equal(restored(paddle.to_tensor(second)).numpy(),
                                  quanter(paddle.to_tensor(second)).numpy())


def test_a_first_batch_with_negatives_keeps_the_signed_grid():
    quanter = MovingAverageAbsMaxQuanter(8)
    quanter.train()
    quanter(paddle.to_tensor(rand((2, 8), seed=3)))
    quanter(paddle.to_tensor(np.abs(rand((2, 8), seed=4))))  # later batches cannot change it
    assert not quanter.is_unsigned()


def test_moving_average_without_scale_passes_through_in_eval():
    quanter = MovingAverageAbsMaxQuanter(8)
    quanter.eval()
    x = rand((3, 4))
    np.testing.assert_array_equal(quanter(paddle.to_tensor(x)).numpy(), x)
    assert quanter.scale.item() == 0
    with pytest.raises(RuntimeError, match="no scale yet"):
        quanter.get_scale()


def test_unknown_or_misplaced_quanters_are_clear_errors():
    with pytest.raises(ValueError, match="valid: \\['abs_max', 'channel_wise_abs_max'\\]"):
        make_quanter("moving_average_abs_max", "weight")
    with pytest.raises(ValueError, match="all quanters"):
        make_quanter("minmax", "activation")
    with pytest.raises(ValueError, match="activation_quantize_type"):
        QuantConfig(activation_quantize_type="channel_wise_abs_max")
    with pytest.raises(ValueError, match="weight_bits"):
        QuantConfig(weight_bits=1)
    with pytest.raises(ValueError, match=r"^skip must be a name pattern or a list of them, got \[3\]$"):
        QuantConfig(skip=[3])
