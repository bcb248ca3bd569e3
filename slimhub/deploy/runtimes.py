"""One loader for the inference runtimes: onnxruntime, OpenVINO and paddle.inference.

``load(path, runtime)`` returns a :class:`Predictor`: call it with a float32 numpy batch,
get the first output back as numpy. Which files each runtime reads:

- ``"onnxruntime"``: ``.onnx`` (CPU provider, default graph optimizations);
- ``"openvino"``: ``.onnx`` or OpenVINO IR ``.xml`` (+ ``.bin``), on the CPU; float
  models run in float32 unless ``precision="bf16"`` (OpenVINO's own default on AMX CPUs);
- ``"paddle"``: a Paddle inference prefix (``prefix.json`` or ``prefix.pdmodel`` +
  ``prefix.pdiparams``), through ``paddle.inference``.

``threads`` is the number of intra-op threads (None: the runtime's default, all cores).
"""
from __future__ import annotations

import importlib
import os

RUNTIMES = ("onnxruntime", "openvino", "paddle")
PRECISIONS = ("f32", "bf16")
_INSTALL = {"onnxruntime": "onnxruntime==1.32.0", "openvino": "openvino==2026.4.1",
            "paddle": "paddlepaddle==3.3.1"}


class Predictor:
    """A loaded model: ``predictor(x) -> first output`` (numpy in, numpy out)."""

    def __init__(self, runtime, path, run, version):
        self.runtime, self.path, self._run, self.version = runtime, path, run, version

    def __call__(self, x):
        return self._run(x)

    def __repr__(self):
        return f"Predictor({self.runtime} {self.version}, {self.path!r})"


def _module(runtime):
    try:
        return importlib.import_module(runtime)
    except ImportError:
        raise ImportError(f"runtime {runtime!r} is not installed; pip install {_INSTALL[runtime]}") from None


def _paddle_files(path):
    """``(program file, params file)`` of a Paddle inference prefix (or one of its files)."""
    prefix = path
    for suffix in (".json", ".pdmodel", ".pdiparams"):
        if prefix.endswith(suffix):
            prefix = prefix[:-len(suffix)]
    for suffix in (".json", ".pdmodel"):
        if os.path.isfile(prefix + suffix) and os.path.isfile(prefix + ".pdiparams"):
            return prefix + suffix, prefix + ".pdiparams"
    raise FileNotFoundError(f"load: no Paddle inference model at {path!r} (looked for "
                            f"{prefix}.json or {prefix}.pdmodel, with {prefix}.pdiparams)")


def default_runtime(path):
    """The runtime that reads ``path`` by default: onnxruntime for .onnx, OpenVINO for .xml,
    paddle.inference otherwise."""
    if path.endswith(".onnx"):
        return "onnxruntime"
    return "openvino" if path.endswith(".xml") else "paddle"


def load(path, runtime=None, threads=1, precision="f32"):
    """A :class:`Predictor` for the model file ``path`` in ``runtime`` (default: by the
    file's kind, see :func:`default_runtime`); ``precision`` applies to OpenVINO only."""
    path = os.fspath(path)
    runtime = runtime or default_runtime(path)
    if runtime not in RUNTIMES:
        raise ValueError(f"load: unknown runtime {runtime!r}; valid: {list(RUNTIMES)}")
    if precision not in PRECISIONS:
        raise ValueError(f"load: unknown precision {precision!r}; valid: {list(PRECISIONS)}")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ValueError(f"load: threads must be a positive integer or None, got {threads!r}")
    if runtime == "paddle":
        return _paddle(path, threads)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"load: model file {path!r} not found")
    readable = (".onnx",) if runtime == "onnxruntime" else (".onnx", ".xml")
    if not path.endswith(readable):
        raise ValueError(f"load: {runtime} reads {' or '.join(readable)} files, not {path!r}")
    return _onnxruntime(path, threads) if runtime == "onnxruntime" else _openvino(path, threads, precision)


def _onnxruntime(path, threads):
    ort = _module("onnxruntime")
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return Predictor("onnxruntime", path, lambda x: session.run(None, {name: x})[0], ort.__version__)


def _openvino(path, threads, precision):
    ov = _module("openvino")
    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": precision}
    if threads is not None:
        config["INFERENCE_NUM_THREADS"] = threads
    compiled = ov.Core().compile_model(path, "CPU", config)
    request = compiled.create_infer_request()

    def run(x):
        return request.infer({0: x})[0].copy()
    return Predictor("openvino", path, run, ov.__version__)


def _paddle(path, threads):
    program, params = _paddle_files(path)
    paddle = _module("paddle")
    from paddle import inference

    config = inference.Config(program, params)
    config.disable_glog_info()
    config.set_cpu_math_library_num_threads(threads or os.cpu_count() or 1)
    predictor = inference.create_predictor(config)
    feed = predictor.get_input_handle(predictor.get_input_names()[0])
    fetch = predictor.get_output_handle(predictor.get_output_names()[0])

    def run(x):
        feed.reshape(list(x.shape))
        feed.copy_from_cpu(x)
        predictor.run()
        return fetch.copy_to_cpu()
    return Predictor("paddle", program, run, paddle.__version__)
