"""CPU latency of exported models in every runtime that reads them, measured side by side.

:func:`benchmark` loads each model file in each runtime that reads it (through
:func:`slimhub.deploy.load`) and times all of them in the same rounds
(:func:`time_predictors`): a round calls every predictor once, in an order that rotates
from round to round, so that a change in the machine's load falls on all of them alike.
Speed-ups are medians of the per-round ratios against the ``"float32"`` model.
:func:`zoo_variants` exports a zoo model as float32, pruned, int8 and pruned+int8 files
to compare; :func:`format_table` prints a result.
"""
from __future__ import annotations

import copy
import importlib.util
import os
import re
import statistics
import time

import numpy as np
import paddle

from slimhub.deploy.cpu import INT8_FLAGS, cpu_info
from slimhub.deploy.runtimes import RUNTIMES, _paddle_files, load
from slimhub.model_zoo import create_model, model_info
from slimhub.prune import prune_uniform
from slimhub.prune.graph import DEFAULT_ROUND_TO
from slimhub.quant import calibrate, export

REFERENCE = "float32"  # the model every speed-up is measured against
RUNS = 20
WARMUP_CALLS = 1  # per predictor, before the timed rounds
BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # CPUs on which OpenVINO computes in bf16
MODEL_SUFFIXES = (".onnx", ".xml", ".json", ".pdmodel", ".pdiparams")
ZOO_INPUT_SHAPE = (3, 224, 224)  # input of a zoo architecture unless given
CALIBRATION_BATCH = 8
_INT8_ONNX_OPS = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "QLinearConv",
                  "QLinearMatMul", "ConvInteger", "MatMulInteger"}
_clock = time.perf_counter


def time_predictors(predictors, x, runs):
    """``{name: [seconds per call]}``: after a warm-up, ``runs`` rounds that each call every
    predictor of ``predictors`` (name -> callable) once on ``x``, in an order rotated by one
    from round to round."""
    if isinstance(runs, bool) or not isinstance(runs, int) or runs < 1:
        raise ValueError(f"benchmark: runs must be a positive integer, got {runs!r}")
    names = list(predictors)
    for name in names:
        for _ in range(WARMUP_CALLS):
            predictors[name](x)
    times = {name: [] for name in names}
    for r in range(runs):
        first = r % len(names)
        for name in names[first:] + names[:first]:
            start = _clock()
            predictors[name](x)
            times[name].append(_clock() - start)
    return times


def speedup(reference, seconds):
    """Median over rounds of ``reference / seconds`` (paired by round); None without a reference."""
    if reference is None:
        return None
    return statistics.median(r / s for r, s in zip(reference, seconds))


def rows_from_times(times, batch, threads):
    """Result rows of one batch size and thread count: ``times`` maps
    ``(model, runtime, precision)`` to seconds per round, all timed in the same rounds."""
    rows = []
    for (model, runtime, precision), seconds in times.items():
        median = statistics.median(seconds)
        rows.append({
            "model": model, "runtime": runtime, "precision": precision, "batch": batch,
            "threads": threads, "median_ms": 1e3 * median, "images_per_s": batch / median,
            "vs_float32_onnxruntime": speedup(times.get((REFERENCE, "onnxruntime", "f32")), seconds),
            "vs_float32_same_runtime": speedup(times.get((REFERENCE, runtime, "f32")), seconds),
        })
    return rows


def runtimes_reading(path):
    """The runtimes that read ``path``: onnxruntime and OpenVINO an .onnx file, OpenVINO an
    .xml file, paddle a Paddle inference prefix (or one of its files)."""
    if path.endswith(".onnx"):
        return ("onnxruntime", "openvino")
    return ("openvino",) if path.endswith(".xml") else ("paddle",)


def runtimes_to_use(runtimes=None):
    """The runtimes a benchmark runs: ``runtimes`` (checked names), or all installed ones."""
    if runtimes is None:
        return tuple(r for r in RUNTIMES if importlib.util.find_spec(r) is not None)
    for runtime in runtimes:
        if runtime not in RUNTIMES:
            raise ValueError(f"benchmark: unknown runtime {runtime!r}; valid: {list(RUNTIMES)}")
    return tuple(runtimes)


def variant_name(path):
    """The model name of a file: its file name without the model suffix."""
    name = os.path.basename(path)
    for suffix in MODEL_SUFFIXES:
        if name.endswith(suffix):
            return name[:-len(suffix)]
    return name


def is_int8(path):
    """Whether the model file ``path`` (.onnx, .xml or a Paddle prefix) holds quantize ops."""
    if path.endswith(".onnx"):
        import onnx

        return any(node.op_type in _INT8_ONNX_OPS for node in onnx.load(path, load_external_data=False).graph.node)
    if path.endswith(".xml"):
        with open(path, encoding="utf-8") as f:
            return 'type="FakeQuantize"' in f.read()
    program, _ = _paddle_files(path)
    with open(program, "rb") as f:
        data = f.read()
    return b"quantize_linear" in data or b"fake_quantize" in data


def file_input_shape(path):
    """The sizes after the batch of the first input of an .onnx or .xml file (a dynamic size
    as its name or "?"); None for a Paddle model (not read)."""
    if path.endswith(".onnx"):
        import onnx

        dims = onnx.load(path, load_external_data=False).graph.input[0].type.tensor_type.shape.dim
        return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in dims][1:]
    if path.endswith(".xml"):
        with open(path, encoding="utf-8") as f:
            found = re.search(r'type="Parameter"[^>]*>\s*<data shape="([^"]*)"', f.read())
        sizes = found.group(1).split(",")[1:] if found else ["?"]
        return [int(s) if s.isdigit() else s for s in sizes]
    return None


def _input_shape(paths, given):
    if given is not None:
        shape = tuple(given)
        if not shape or not all(isinstance(s, int) and s > 0 for s in shape):
            raise ValueError(f"benchmark: input_shape must be positive sizes like (3, 224, 224), got {given!r}")
        return shape
    shapes = {}
    for path in paths:
        shape = file_input_shape(path)
        if shape is None:
            continue
        if not all(isinstance(s, int) and s > 0 for s in shape):
            raise ValueError(f"benchmark: {path} has a dynamic input shape {shape} besides the batch; "
                             "pass input_shape (C, H, W)")
        shapes[path] = tuple(shape)
    if not shapes:
        raise ValueError(f"benchmark: the input shape of Paddle model {paths[0]} is not read from the "
                         "file; pass input_shape (C, H, W; slimhub bench --input-shape)")
    if len(set(shapes.values())) > 1:
        raise ValueError(f"benchmark: the models' input shapes differ: {shapes}")
    return next(iter(shapes.values()))


def _use_bf16(bf16):
    if bf16 == "auto":
        return bool(cpu_info().flags & set(BF16_FLAGS))
    if not isinstance(bf16, bool):
        raise ValueError(f"benchmark: bf16 must be 'auto', True or False, got {bf16!r}")
    return bf16


def _plan(models, runtimes, bf16):
    """``[(model, runtime, precision, path)]``: one entry per row to time."""
    plan, seen = [], {}
    for model, paths in models.items():
        for path in [paths] if isinstance(paths, (str, os.PathLike)) else paths:
            path = os.fspath(path)
            if path.endswith((".onnx", ".xml")) and not os.path.isfile(path):
                raise FileNotFoundError(f"benchmark: model file {path!r} not found")
            precision = "int8" if is_int8(path) else "f32"
            for runtime in runtimes_reading(path):
                if runtime not in runtimes:
                    continue
                for p in [precision] + (["bf16"] if runtime == "openvino" and precision == "f32" and bf16 else []):
                    key = (model, runtime, p)
                    if key in seen:
                        raise ValueError(f"benchmark: model {model!r} has two files for {runtime}: "
                                         f"{seen[key]} and {path}")
                    seen[key] = path
                    plan.append((model, runtime, p, path))
    if not plan:
        raise ValueError(f"benchmark: no runtime among {list(runtimes)} reads any of the models {dict(models)}")
    return plan


def _positive(values, what, allow_none=False):
    values = tuple(values)
    if not values or not all((v is None and allow_none) or (isinstance(v, int) and not isinstance(v, bool) and v > 0)
                             for v in values):
        raise ValueError(f"benchmark: {what} must be positive integers{' or None' if allow_none else ''}, "
                         f"got {values!r}")
    return values


def benchmark(models, runtimes=None, batch_sizes=(1, 32), threads=(1, None), runs=RUNS, input_shape=None,
              bf16="auto"):
    """Time every model of ``models`` (name -> model file or Paddle prefix, or a list of them:
    one network in several formats) in every runtime of ``runtimes`` (default: those
    installed) that reads it, at each batch size and thread count (None: the runtime's
    default, all cores), over ``runs`` interleaved rounds.

    Float files also run in OpenVINO in bf16 (``bf16``: "auto" where the CPU has amx_bf16
    or avx512_bf16, True, False); int8 files run with OpenVINO's float precision f32.
    ``input_shape`` (sizes after the batch) is read from the .onnx/.xml files when not given.
    Returns ``{"cpu", "versions", "input_shape", "runs", "rows"}``; each row's speed-ups are
    ``vs_float32_onnxruntime`` and ``vs_float32_same_runtime``: the time of the ``"float32"``
    model (f32) in onnxruntime, or in the row's runtime, over the row's time, as the median
    of per-round ratios at the same batch size and threads (None without that reference).
    """
    runtimes = runtimes_to_use(runtimes)
    batch_sizes, threads = _positive(batch_sizes, "batch_sizes"), _positive(threads, "threads", allow_none=True)
    plan = _plan(models, runtimes, _use_bf16(bf16))
    shape = _input_shape([path for *_, path in plan], input_shape)
    rng = np.random.default_rng(0)
    rows, versions = [], {}
    for count in threads:
        predictors = {}
        for model, runtime, precision, path in plan:
            predictor = load(path, runtime, threads=count, precision="bf16" if precision == "bf16" else "f32")
            predictors[(model, runtime, precision)] = predictor
            versions[runtime] = predictor.version
        for batch in batch_sizes:
            x = rng.standard_normal((batch, *shape)).astype("float32")
            rows += rows_from_times(time_predictors(predictors, x, runs), batch, count)
    rows.sort(key=lambda row: (batch_sizes.index(row["batch"]), threads.index(row["threads"])))
    cpu = cpu_info()
    return {
        "cpu": {"model": cpu.model, "kind": cpu.kind, "describe": cpu.describe(),
                "flags": [f for f in INT8_FLAGS + BF16_FLAGS if f in cpu.flags]},
        "versions": {r: versions[r] for r in RUNTIMES if r in versions},
        "input_shape": list(shape),
        "runs": runs,
        "rows": rows,
    }


def _export_pair(network, folder, name, input_spec, int8, on_mismatch="raise"):
    """The ONNX file and the Paddle inference model file of ``network``, as folder/name.*."""
    prefix = os.path.join(folder, name)
    formats = ("onnx_int8", "paddle_int8") if int8 else ("onnx", "inference")
    return [export(network, prefix, input_spec, format=f, on_mismatch=on_mismatch)[0] for f in formats]


def zoo_variants(name, folder, input_shape=None, pretrained=False, pruned_flops=0.5, calibration_batches=4,
                 round_to=DEFAULT_ROUND_TO):
    """Export the zoo model ``name`` into ``folder`` as ONNX ("onnx"/"onnx_int8") and Paddle
    inference ("inference"/"paddle_int8") files; returns the ``models`` of :func:`benchmark`.

    An architecture ("resnet18") or a float pretrained entry ("resnet20.fmnist_baseline")
    gives four models: "float32"; "pruned" (``pruned_flops`` of the MACs removed by
    :func:`slimhub.prune.prune_uniform`, keeping multiples of ``round_to`` channels); "int8" and "pruned+int8", calibrated by
    :func:`slimhub.quant.calibrate` (its defaults) on ``calibration_batches`` batches of
    standard-normal random inputs: right for timing, not for accuracy (so with random
    weights an int8 file that its runtime computes differently warns rather than raises). A pretrained entry
    that is already pruned and/or quantized is exported as it is, one model named
    "pruned", "int8" or "pruned+int8".

    ``input_shape`` (C, H, W) defaults to the entry's input size, or 3x224x224 for an
    architecture (built with ``in_channels=C``); ``pretrained`` is passed to
    :func:`slimhub.model_zoo.create_model` (True: load the entry's weights; False: random
    weights of seed 0, whose BatchNorm statistics the calibration batches then update).
    """
    info = model_info(name)
    paddle.seed(0)
    if "tag" in info:
        shape = tuple(input_shape or info["input_size"])
        network = create_model(name, pretrained=pretrained)
    else:
        shape = tuple(input_shape or ZOO_INPUT_SHAPE)
        network = create_model(name, pretrained=pretrained, in_channels=shape[0])
    spec = [paddle.static.InputSpec([None, *shape], "float32", "x")]
    done = [kind for kind, key in (("pruned", "pruning_plan"), ("int8", "quant_format")) if info.get(key)]
    if done:
        variant = "+".join(done)
        return {variant: _export_pair(network, folder, variant, spec, int8="int8" in done)}
    rng = np.random.default_rng(0)
    data = [rng.standard_normal((CALIBRATION_BATCH, *shape)).astype("float32") for _ in range(calibration_batches)]
    if not pretrained:  # random weights: BatchNorm statistics moved towards those of the data
        network.train()
        with paddle.no_grad():
            for x in data:
                network(paddle.to_tensor(x))
    network.eval()
    pruned = copy.deepcopy(network)
    prune_uniform(pruned, shape, pruned_flops=pruned_flops, round_to=round_to)
    networks = {"float32": network, "pruned": pruned,
                "int8": calibrate(copy.deepcopy(network), data, calibration_batches),
                "pruned+int8": calibrate(copy.deepcopy(pruned), data, calibration_batches)}
    # random weights calibrated on noise: a runtime may round a near-tie differently, which
    # matters for accuracy, not for timing, so a mismatch warns
    return {variant: _export_pair(net, folder, variant, spec, int8=variant.endswith("int8"),
                                  on_mismatch="raise" if pretrained else "warn")
            for variant, net in networks.items()}


def _milliseconds(value):
    return f"{value:.3f}" if value < 10 else f"{value:.1f}"


def _ratio(value):
    return "-" if value is None else f"{value:.2f}x"


def format_table(result, title=None):
    """A text table of a :func:`benchmark` result, headed by the CPU and runtime versions."""
    shape = "x".join(str(s) for s in result["input_shape"])
    lines = ([title] if title else []) + [
        f"CPU: {result['cpu']['describe']}",
        "runtimes: " + ", ".join(f"{r} {v}" for r, v in result["versions"].items()),
        (f"input {shape}; median of {result['runs']} interleaved rounds; speed-up: float32 time / this "
         "time (median of per-round ratios)"),
    ]
    header = ("model", "runtime", "precision", "ms", "images/s", "vs f32 onnxruntime", "vs f32 same runtime")
    width = max([len(row["model"]) for row in result["rows"]] + [len("model")])
    template = f"  {{:<{width}}}  {{:<11}}  {{:<9}}  {{:>9}}  {{:>9}}  {{:>18}}  {{:>19}}"
    group = None
    for row in result["rows"]:
        if (row["batch"], row["threads"]) != group:
            group = (row["batch"], row["threads"])
            count = row["threads"]
            threads = "all threads" if count is None else f"{count} thread{'s' * (count > 1)}"
            lines += ["", f"batch {row['batch']}, {threads}", template.format(*header)]
        lines.append(template.format(row["model"], row["runtime"], row["precision"], _milliseconds(row["median_ms"]),
                                     f"{row['images_per_s']:.1f}", _ratio(row["vs_float32_onnxruntime"]),
                                     _ratio(row["vs_float32_same_runtime"])))
    return "\n".join(lines)
