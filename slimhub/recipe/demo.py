"""``slimhub demo``: the zoo's trained Fashion-MNIST MobileNetV1 is pruned by half its MACs,
fine-tuned with int8 QAT by a shipped recipe and exported; both deployed files are then
scored and timed side by side in every runtime, and the table shows the runtime in which
the compressed file is fastest."""
from __future__ import annotations

import os

import numpy as np
import paddle

from slimhub.deploy import cpu_info, load, top1
from slimhub.deploy.bench import time_predictors
from slimhub.export import export
from slimhub.flops import flops
from slimhub.model_zoo import create_model
from slimhub.recipe.recipe import load_recipe

BASELINE = "mobilenet_v1.fmnist_small_baseline"
COMPRESSED = "fashion_mnist/demo_prune_qat"
RUNTIMES = ("onnxruntime", "openvino")
MAX_DROP = 0.02  # the compressed model may lose at most 2 points
BATCH = 32


def _files(workdir, overrides):
    """Export the zoo baseline and run the compression recipe (a finished run is reused);
    returns ``(recipe, baseline network, baseline file, compressed file)``."""
    comp_dir = os.path.join(workdir, "prune_qat")
    recipe = load_recipe(COMPRESSED, [f"trainer.save_dir={comp_dir}",
                                      f"export.path={os.path.join(comp_dir, 'model')}", *overrides])
    baseline = create_model(BASELINE, pretrained=True)
    spec = [paddle.static.InputSpec([None, *recipe.input_shape], "float32", "image")]
    base_file = export(baseline, os.path.join(workdir, "baseline", "model"), spec, format="onnx",
                       samples=recipe.samples())[0]
    recipe.fit()  # a finished run resumes at its end and trains no further
    onnx = [f for f in recipe.export() if f.endswith(".onnx")]
    if not onnx:
        raise ValueError(f"{recipe.path}: the demo needs an ONNX export (export.formats)")
    return recipe, baseline, base_file, onnx[0]


def measure(files, dataset, input_shape, runs=100):
    """``{runtime: {"baseline"|"compressed": {"top1", "latency_ms", "batch_ms"}}}``: top-1 on
    ``dataset`` computed by each runtime, and the median time of one batch of 1 and of
    ``BATCH`` on one thread, the two files timed in alternation so that they share the
    machine's load."""
    rng = np.random.default_rng(0)
    inputs = {"latency_ms": rng.standard_normal((1, *input_shape)).astype("float32"),
              "batch_ms": rng.standard_normal((BATCH, *input_shape)).astype("float32")}
    result = {}
    for runtime in RUNTIMES:
        predictors = {name: load(path, runtime, threads=1) for name, path in files.items()}
        times = {key: time_predictors(predictors, x, runs) for key, x in inputs.items()}
        result[runtime] = {name: {"top1": top1(load(files[name], runtime, threads=None), dataset),
                                  **{key: 1000 * float(np.median(t[name])) for key, t in times.items()}}
                           for name in files}
    return result


def fastest(measured):
    """The runtime in which the compressed file runs a batch of ``BATCH`` fastest."""
    return min(measured, key=lambda r: measured[r]["compressed"]["batch_ms"])


def table(before, after, runtime):
    """The before/after table as text; the last column is after / before."""
    def ratio(key):
        return f"{after[key] / before[key]:.2f}x"

    rows = [
        ("top-1 accuracy", f"{before['top1']:.4f}", f"{after['top1']:.4f}",
         f"{100 * (after['top1'] - before['top1']):+.2f} points"),
        ("MACs per image", f"{before['flops'] / 1e6:.3f} M", f"{after['flops'] / 1e6:.3f} M", ratio("flops")),
        ("parameters", f"{before['params'] / 1e6:.3f} M", f"{after['params'] / 1e6:.3f} M", ratio("params")),
        ("file size", f"{before['file_bytes'] / 1e6:.3f} MB", f"{after['file_bytes'] / 1e6:.3f} MB",
         ratio("file_bytes")),
        ("latency, batch 1, 1 thread", f"{before['latency_ms']:.3f} ms", f"{after['latency_ms']:.3f} ms",
         ratio("latency_ms")),
        (f"time of a batch of {BATCH}, 1 thread", f"{before['batch_ms']:.2f} ms", f"{after['batch_ms']:.2f} ms",
         ratio("batch_ms")),
    ]
    head = (runtime, "baseline float32", "pruned -50% + int8", "after / before")
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(4)]
    lines = [" | ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [head] + rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def verdicts(measured, runtime):
    """One line for each figure that disappoints, saying why."""
    before, after = measured[runtime]["baseline"], measured[runtime]["compressed"]
    lines = []
    if after["top1"] < before["top1"] - MAX_DROP:
        lines.append(f"accuracy fell by more than {100 * MAX_DROP:.0f} points: the fine-tuning was too "
                     "short for this pruning ratio (train longer: --set trainer.epochs=..., or prune less)")
    for key, what in (("latency_ms", "at batch 1"), ("batch_ms", f"at batch {BATCH}")):
        best = min(measured, key=lambda r: measured[r]["baseline"][key])
        if after[key] >= measured[best]["baseline"][key]:
            lines.append(f"{what} the compressed file ({runtime}, {after[key]:.3f} ms) is not faster than the "
                         f"baseline in {best} ({measured[best]['baseline'][key]:.3f} ms) on this CPU "
                         f"({cpu_info().kind}): a network this small is bound by the runtime's per-layer "
                         "overhead, not by its arithmetic")
    return lines


def run_demo(workdir=os.path.join("runs", "demo"), overrides=()):
    """Run the demo in ``workdir`` (``overrides`` apply to the compression recipe) and print
    the table; returns ``(runtime, before, after)``."""
    print(f"stage 1/2: export the zoo's trained {BASELINE} (float32)")
    print(f"stage 2/2: prune -50% MACs, fine-tune, QAT, int8 export ({COMPRESSED})")
    recipe, baseline, base_file, comp_file = _files(workdir, overrides)
    measured = measure({"baseline": base_file, "compressed": comp_file}, recipe.eval_data, recipe.input_shape)
    runtime = fastest(measured)
    sizes = {"baseline": flops(baseline, recipe.input_shape), "compressed": recipe.size()}
    before, after = ({**measured[runtime][name], "flops": sizes[name]["flops"], "params": sizes[name]["params"],
                      "file_bytes": os.path.getsize(path)}
                     for name, path in (("baseline", base_file), ("compressed", comp_file)))
    print(f"\nFashion-MNIST, {len(recipe.eval_data)} test images, scored and timed in each runtime on "
          f"{cpu_info().describe()}; files {base_file} and {comp_file}\n")
    print(table(before, after, runtime))
    for other in RUNTIMES:
        if other != runtime:
            b, a = measured[other]["baseline"], measured[other]["compressed"]
            print(f"{other}: top-1 {b['top1']:.4f} -> {a['top1']:.4f}, batch 1 {b['latency_ms']:.3f} -> "
                  f"{a['latency_ms']:.3f} ms, batch {BATCH} {b['batch_ms']:.2f} -> {a['batch_ms']:.2f} ms")
    for line in verdicts(measured, runtime):
        print(f"note: {line}")
    return runtime, before, after
