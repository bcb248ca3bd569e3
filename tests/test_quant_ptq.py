"""Post-training calibration: scales from the data, KL threshold, errors."""
import numpy as np
import paddle
import pytest
from paddle import nn

from slimhub.quant import calibrate, quantize, quantized_layers
from slimhub.quant.ptq import HistogramKLCalibrator, kl_threshold_bin


def net():
    paddle.seed(0)
    return nn.Sequential(nn.Conv2D(2, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))


def data(n_batches=4, seed=0):
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal((2, 2, 6, 6)).astype("float32") * (i + 1),
             np.zeros((2, 1), "int64")) for i in range(n_batches)]


def test_abs_max_is_the_largest_input_magnitude_of_the_used_batches():
    batches = data()
    model = calibrate(net(), batches, num_batches=3, method="abs_max")
    expected = max(np.abs(x).max() for x, _ in batches[:3]) / 127
    assert model[0].activation_quanter.scale.item() == pytest.approx(expected, rel=1e-6)
    assert not model[0].activation_quanter.is_unsigned()  # the inputs have both signs
    # the Linear sees relu(conv(x)) of the float network: never negative, so codes 0..255
    float_net = net()
    features = [nn.functional.relu(float_net[0](paddle.to_tensor(x))).numpy() for x, _ in batches[:3]]
    assert model[3].activation_quanter.is_unsigned()
    assert model[3].activation_quanter.scale.item() == pytest.approx(
        max(f.max() for f in features) / 255, rel=1e-5)
    assert not model.training


def test_moving_average_follows_the_ema_of_batch_maxima():
    batches = data()
    model = calibrate(net(), batches, num_batches=4, method="moving_average_abs_max", moving_rate=0.5)
    ema = None
    for x, _ in batches:
        ema = np.abs(x).max() if ema is None else 0.5 * ema + 0.5 * np.abs(x).max()
    assert model[0].activation_quanter.scale.item() == pytest.approx(ema / 127, rel=1e-6)


def test_kl_of_an_even_histogram_keeps_the_whole_range():
    # 128 levels over 2048 even bins: Q equals P exactly only without clipping
    assert kl_threshold_bin(np.ones(2048), 128) == 2047


def test_kl_clips_rare_outliers_and_quantizes_the_bulk_better():
    rng = np.random.default_rng(0)
    bulk = rng.standard_normal(200_000).astype("float32")
    values = np.concatenate([bulk, np.array([40.0, -35.0], "float32")])
    calibrator = HistogramKLCalibrator()
    for pass_index in range(2):
        calibrator.observe(values, pass_index)
    threshold = calibrator.threshold(8)
    assert 3.0 < threshold < 20.0  # far below the outliers, above most of the bulk

    def mse(limit):
        s = limit / 127
        return np.mean((np.clip(np.round(bulk / s), -127, 127) * s - bulk) ** 2)
    assert mse(threshold) < mse(40.0) / 4


def test_calibrated_network_stays_close_to_the_float_network():
    batches = data()
    model = calibrate(net(), batches, num_batches=2, method="histogram_kl")
    assert sorted(quantized_layers(model)) == ["0", "3"]
    scale = model[0].activation_quanter.scale.item()
    assert 0 < scale <= max(np.abs(x).max() for x, _ in batches[:2]) / 127 * (1 + 1e-6)
    x = paddle.to_tensor(batches[0][0])
    reference = net()(x).numpy()
    out = model(x).numpy()
    # 8-bit inputs and weights: errors of a few 1/127 of the ranges, not more
    assert 0 < np.abs(out - reference).max() < 0.05 * np.abs(reference).max()


def test_errors_leave_the_network_unchanged():
    model = net()
    with pytest.raises(TypeError, match="re-iterable"):
        calibrate(model, iter(data()), method="abs_max")
    with pytest.raises(ValueError, match="unknown method 'minmax'"):
        calibrate(model, data(), method="minmax")
    with pytest.raises(ValueError, match="skip pattern 'conv'"):
        calibrate(model, data(), skip=["conv"])
    with pytest.raises(ValueError, match="no batches"):
        calibrate(model, [], method="abs_max")
    assert not quantized_layers(model)
    with pytest.raises(ValueError, match="already quantized"):
        calibrate(quantize(net()), data())
