"""Check an exported file against the network it came from, in the runtimes that will run it.

:func:`verify` runs the file on this machine (default graph optimizations) on a batch of
inputs and compares its outputs with the network's (eval mode, the fake-quantized
network for int8 files): the share of samples whose argmax over the last axis agrees,
and the largest output difference relative to the network's largest output. Below
``min_agreement``, or above ``max_error``, it raises :class:`ExportMismatch`
(``on_mismatch="raise"``) or warns (``"warn"``), naming the file, runtime, both measures,
the CPU and the likely cause. (An int8 file computes its fake-quantized network up to
float rounding: an activation within rounding of a quantization boundary may land one
step away, far below either limit.)
"""
from __future__ import annotations

import warnings

import numpy as np
import paddle

from slimhub.deploy.cpu import cpu_info
from slimhub.deploy.runtimes import load

MIN_AGREEMENT = 0.99
MAX_ERROR = 0.1  # largest |file - network| output difference, relative to max |network output|
RANDOM_SAMPLES = 100  # default inputs: this many standard-normal samples (seed 0)
ON_MISMATCH = ("raise", "warn")


class ExportMismatch(ValueError):
    """An exported file computes something other than the network it came from."""


def random_samples(input_spec, count=RANDOM_SAMPLES):
    """Standard-normal float32 inputs shaped like ``input_spec[0]`` (batch ``count``)."""
    shape = list(input_spec[0].shape)[1:]
    if any(s is None or s < 0 for s in shape):
        raise ValueError(f"export: input_spec {input_spec[0].shape} has unknown sizes besides the "
                         "batch; pass samples= (a batch of real inputs) to verify the file")
    return np.random.default_rng(0).standard_normal((count, *shape)).astype("float32")


def _chunks(x, size):
    return [x[i:i + size] for i in range(0, len(x), size)]


def _network_outputs(network, x, size):
    with paddle.no_grad():
        return np.concatenate([network(paddle.to_tensor(c)).numpy() for c in _chunks(x, size)])


def _weight_bits(network):
    """The widest weight grid of the network's quantized layers (None: not quantized)."""
    bits = [layer.weight_quanter.bits for layer in network.sublayers() if hasattr(layer, "weight_quanter")]
    return max(bits) if bits else None


def likely_cause(network, runtime):
    """One sentence on why ``runtime`` may disagree with ``network`` on this CPU."""
    bits = _weight_bits(network)
    if bits is not None and bits > 7 and not cpu_info().has_vnni and runtime in ("onnxruntime", "openvino"):
        return (f"{bits}-bit weights on a CPU without VNNI: {runtime} sums pairs of u8 x s8 products "
                "in int16 (VPMADDUBSW), which saturates; quantize with target='x86' (7-bit weights)")
    if bits is not None:
        return (f"an operation that {runtime} computes differently from the fake-quantized network; "
                "check that every quantized layer was trained or calibrated on real data")
    return f"an operation that the exporter or {runtime} converts differently from Paddle"


def verify(network, model_file, runtimes, samples, on_mismatch="raise", min_agreement=MIN_AGREEMENT,
           max_error=MAX_ERROR, batch_size=25):
    """Run ``model_file`` in each of ``runtimes`` on ``samples`` (a float32 numpy batch) and
    compare with ``network``; returns ``{runtime: {"agreement", "max_error"}}``."""
    if on_mismatch not in ON_MISMATCH:
        raise ValueError(f"export: on_mismatch must be one of {list(ON_MISMATCH)}, got {on_mismatch!r}")
    samples = np.asarray(samples.numpy() if isinstance(samples, paddle.Tensor) else samples, "float32")
    expected = _network_outputs(network, samples, batch_size)
    span = float(np.abs(expected).max()) or 1.0
    report, problems = {}, []
    for runtime in runtimes:
        predictor = load(model_file, runtime, threads=None)
        actual = np.concatenate([predictor(c) for c in _chunks(samples, batch_size)])
        if actual.shape != expected.shape:
            raise ExportMismatch(f"export: {model_file} gives outputs of shape {actual.shape} in {runtime}, "
                                 f"the network {expected.shape}")
        flat = (len(samples), -1)
        agreement = float((actual.reshape(flat).argmax(1) == expected.reshape(flat).argmax(1)).mean())
        error = float(np.abs(actual - expected).max()) / span
        report[runtime] = {"agreement": agreement, "max_error": error}
        if agreement < min_agreement or error > max_error:
            problems.append(
                f"in {runtime} {predictor.version} its argmax agrees with the network on "
                f"{100 * agreement:.1f}% of {len(samples)} samples (need {100 * min_agreement:.0f}%) and "
                f"outputs differ by up to {100 * error:.1f}% of the largest (limit {100 * max_error:.0f}%); "
                f"likely cause: {likely_cause(network, runtime)}")
    if problems:
        message = (f"export: {model_file} does not compute the network on this CPU, "
                   f"{cpu_info().describe()}: " + "; ".join(problems))
        if on_mismatch == "raise":
            raise ExportMismatch(message + ". Nothing was written; pass on_mismatch='warn' to keep the file")
        warnings.warn(message, stacklevel=3)
    return report
