"""Post-training quantization: calibrate activation scales on a few batches, no training.

:func:`calibrate` runs the float network in eval mode on ``num_batches`` batches,
records the inputs of every Conv2D / Linear it will quantize (and the outputs of the
convs, or their BatchNorms, that feed a residual sum: see :mod:`slimhub.quant.residual`),
then wraps those layers (as :func:`slimhub.quant.quantize` does) with static activation
quanters whose scales are the calibrated ones. A quanter whose calibration inputs were
never negative gets the unsigned grid: the same threshold divided into ``2^b - 1`` steps
instead of ``2^(b-1) - 1``. The result exports like a QAT network, and can also be
fine-tuned with QAT (the moving averages then start from the calibration).

Calibration methods (``CALIBRATORS``, by name), per layer input:

- ``abs_max``: the largest ``|x|`` over all batches.
- ``moving_average_abs_max``: exponential moving average of each batch's ``max|x|``
  (the first batch sets it), as QAT's activation quanter does in training.
- ``histogram_kl``: the clipping threshold whose quantized distribution is closest,
  in Kullback-Leibler divergence, to the histogram of ``|x|`` (the entropy
  calibration described for TensorRT); ignores rare outliers. Makes a second pass.
"""
from __future__ import annotations

import numpy as np
import paddle
from paddle import nn

from slimhub.quant.quanters import EPS, qmax
from slimhub.quant.residual import residual_outputs
from slimhub.quant.wrap import (QuantConfig, add_output_quanters, layers_to_quantize, quantize,
                                quantized_layers)


class AbsMaxCalibrator:
    passes = 1

    def __init__(self):
        self.absmax = 0.0

    def observe(self, x, pass_index):
        self.absmax = max(self.absmax, float(np.abs(x).max()))

    def threshold(self, bits):
        return self.absmax


class MovingAverageCalibrator:
    passes = 1

    def __init__(self, moving_rate=0.9):
        self.rate = moving_rate
        self.value = None

    def observe(self, x, pass_index):
        current = float(np.abs(x).max())
        self.value = current if self.value is None else self.rate * self.value + (1 - self.rate) * current

    def threshold(self, bits):
        return self.value


class HistogramKLCalibrator:
    """Pass 0 finds ``max|x|``; pass 1 builds a ``bins``-bin histogram of ``|x|`` on ``[0, max]``."""

    passes = 2

    def __init__(self, bins=2048):
        if not isinstance(bins, int) or bins < 256:
            raise ValueError(f"histogram_kl: bins must be an integer >= 256, got {bins!r}")
        self.bins = bins
        self.absmax = 0.0
        self.hist = np.zeros(bins, dtype="float64")

    def observe(self, x, pass_index):
        magnitude = np.abs(x).ravel()
        if pass_index == 0:
            self.absmax = max(self.absmax, float(magnitude.max()))
        elif self.absmax > 0:
            self.hist += np.histogram(magnitude, bins=self.bins, range=(0.0, self.absmax))[0]

    def threshold(self, bits):
        if self.absmax <= 0:
            return 0.0
        return (kl_threshold_bin(self.hist, qmax(bits) + 1) + 0.5) * self.absmax / self.bins


def kl_threshold_bin(hist, levels):
    """The bin index ``i`` (>= ``levels`` - 1) whose clipping ``[0, i]`` minimizes
    KL(P || Q): P is ``hist[:i+1]`` with the mass beyond added to bin ``i``, Q is
    ``hist[:i+1]`` merged into ``levels`` groups, each group's mass spread evenly
    over its non-empty bins."""
    hist = np.asarray(hist, dtype="float64")
    best, best_kl = len(hist) - 1, np.inf
    for end in range(levels, len(hist) + 1):
        p = hist[:end].copy()
        p[-1] += hist[end:].sum()
        nonzero = hist[:end] > 0
        starts = (np.arange(levels) * end) // levels
        mass = np.add.reduceat(hist[:end], starts)
        count = np.add.reduceat(nonzero.astype("float64"), starts)
        sizes = np.diff(np.append(starts, end))
        q = np.repeat(np.divide(mass, count, out=np.zeros_like(mass), where=count > 0), sizes) * nonzero
        p_sum, q_sum = p.sum(), q.sum()
        if p_sum <= 0 or q_sum <= 0:
            continue
        p, q = p / p_sum, q / q_sum
        support = p > 0
        if np.any(q[support] <= 0):
            continue
        kl = float(np.sum(p[support] * np.log(p[support] / q[support])))
        if kl < best_kl:
            best, best_kl = end - 1, kl
    return best


CALIBRATORS = {
    "abs_max": AbsMaxCalibrator,
    "moving_average_abs_max": MovingAverageCalibrator,
    "histogram_kl": HistogramKLCalibrator,
}


def make_calibrator(method, **options):
    if method not in CALIBRATORS:
        raise ValueError(f"calibrate: unknown method {method!r}; valid methods: {sorted(CALIBRATORS)}")
    return CALIBRATORS[method](**options)


def _batches(data, num_batches):
    """The first ``num_batches`` network inputs of ``data`` (tensors, arrays, or (input, label) pairs)."""
    for i, batch in enumerate(data):
        if i >= num_batches:
            return
        x = batch[0] if isinstance(batch, (list, tuple)) else batch
        yield x if isinstance(x, paddle.Tensor) else paddle.to_tensor(np.asarray(x, dtype="float32"))


def calibrate(network, data, num_batches=10, method="histogram_kl",
              weight_quantize_type="channel_wise_abs_max", target="x86", weight_bits=None,
              activation_bits=8, skip=(), **method_options):
    """Quantize the float ``network`` in place with activation scales calibrated on
    the first ``num_batches`` batches of ``data`` (an iterable that can be iterated
    again: a list, a ``paddle.io.DataLoader``); returns the network, in eval mode.

    Statistics are taken on the float network; ``method`` names a calibrator (see
    ``CALIBRATORS``) and ``method_options`` go to it (``moving_rate`` for
    moving_average_abs_max, ``bins`` for histogram_kl). ``target`` and ``weight_bits``
    choose the weight grid as in :class:`slimhub.quant.QuantConfig`. On an error the
    network is left unchanged.
    """
    config = QuantConfig(weight_quantize_type=weight_quantize_type,
                         activation_quantize_type="moving_average_abs_max",
                         target=target, weight_bits=weight_bits, activation_bits=activation_bits,
                         skip=skip)
    make_calibrator(method, **method_options)  # validate the options before any work
    if quantized_layers(network):
        raise ValueError("calibrate: the network is already quantized; calibrate a float network")
    if not isinstance(num_batches, int) or isinstance(num_batches, bool) or num_batches < 1:
        raise ValueError(f"calibrate: num_batches must be a positive integer, got {num_batches!r}")
    if iter(data) is data:
        raise TypeError("calibrate: data must be re-iterable (a list or DataLoader), not an iterator")
    layers = layers_to_quantize(network, config)
    first = next(_batches(data, 1), None)
    if first is None:
        raise ValueError("calibrate: data yielded no batches")
    network.eval()
    outputs = residual_outputs(network, first, [n for n, l in layers.items() if isinstance(l, nn.Conv2D)])
    named = dict(network.named_sublayers())
    observers = {(name, side): _Observer(make_calibrator(method, **method_options))
                 for side, names in (("input", layers), ("output", outputs)) for name in names}
    for pass_index in range(CALIBRATORS[method].passes):
        hooks = [observer.attach(named[name], side, pass_index)
                 for (name, side), observer in observers.items()]
        try:
            with paddle.no_grad():
                for x in _batches(data, num_batches):
                    network(x)
        finally:
            for h in hooks:
                h.remove()
    quantize(network, config)
    add_output_quanters(network, outputs, config)
    named = dict(network.named_sublayers())
    for (name, side), observer in observers.items():
        quanter = named[name].activation_quanter if side == "input" else named[name].output_quanter
        unsigned = observer.smallest >= 0
        threshold = observer.calibrator.threshold(quanter.bits)
        quanter.unsigned.set_value(paddle.to_tensor(unsigned))
        quanter.scale.set_value(paddle.to_tensor(max(threshold, EPS) / qmax(quanter.bits, unsigned)))
    return network


class _Observer:
    """Feeds one layer's input or output to its calibrator, and keeps its smallest value."""

    def __init__(self, calibrator):
        self.calibrator = calibrator
        self.smallest = np.inf

    def observe(self, x, pass_index):
        if pass_index == 0:
            self.smallest = min(self.smallest, float(x.min()))
        self.calibrator.observe(x, pass_index)

    def attach(self, layer, side, pass_index):
        """A hook on ``layer`` observing its ``side`` ("input" or "output"); returns the hook handle."""
        if side == "input":
            return layer.register_forward_pre_hook(
                lambda lyr, args: self.observe(args[0].numpy(), pass_index))
        return layer.register_forward_post_hook(
            lambda lyr, args, out: self.observe(out.numpy(), pass_index))
