"""``slimhub demo``: baseline -> prune -> QAT -> int8 export on Fashion-MNIST, driven by
two shipped recipes, ending in a before/after table of the deployed ONNX files."""
from __future__ import annotations

import os
import time

import numpy as np

from slimhub.recipe.recipe import load_recipe

BASELINE = "fashion_mnist/demo_baseline"
COMPRESSED = "fashion_mnist/demo_prune_qat"


def _stage(name, folder, overrides):
    recipe = load_recipe(name, [f"trainer.save_dir={folder}",
                                f"export.path={os.path.join(folder, 'model')}", *overrides])
    recipe.fit()  # a finished stage resumes at its end and trains no further
    onnx = [f for f in recipe.export() if f.endswith(".onnx")]
    if not onnx:
        raise ValueError(f"{recipe.path}: the demo needs an ONNX export (export.formats)")
    return recipe, onnx[0]


def onnx_session(path):
    """An ONNX Runtime CPU session on one thread (latency comparable across runs)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def onnx_top1(path, dataset, batch_size=256):
    """Top-1 accuracy of the ONNX model at ``path`` on ``dataset`` ((image, label) pairs)."""
    session = onnx_session(path)
    name = session.get_inputs()[0].name
    correct = 0
    for start in range(0, len(dataset), batch_size):
        samples = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
        x = np.stack([np.asarray(s[0], dtype="float32") for s in samples])
        y = np.array([int(np.asarray(s[1]).reshape(-1)[0]) for s in samples])
        correct += int((session.run(None, {name: x})[0].argmax(axis=1) == y).sum())
    return correct / len(dataset)


def onnx_latency_ms(path, input_shape, runs=300):
    """Median milliseconds of one batch-1 inference in ONNX Runtime."""
    session = onnx_session(path)
    name = session.get_inputs()[0].name
    x = np.random.default_rng(0).normal(size=(1, *input_shape)).astype("float32")
    for _ in range(20):
        session.run(None, {name: x})
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run(None, {name: x})
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def measure(recipe, onnx_path):
    """Top-1, MACs, parameters, file size and latency of a stage's deployed ONNX file."""
    size = recipe.size()
    return {"top1": onnx_top1(onnx_path, recipe.eval_data), "flops": size["flops"],
            "params": size["params"], "file_bytes": os.path.getsize(onnx_path),
            "latency_ms": onnx_latency_ms(onnx_path, recipe.input_shape)}


def table(before, after):
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
    ]
    head = ("ONNX Runtime, CPU", "baseline float32", "pruned -50% + int8", "after / before")
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(4)]
    lines = [" | ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [head] + rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def run_demo(workdir=os.path.join("runs", "demo"), overrides=()):
    """Run both stages in ``workdir`` (``overrides`` apply to both) and print the table;
    returns ``(before, after)`` measurements."""
    base_dir, comp_dir = os.path.join(workdir, "baseline"), os.path.join(workdir, "prune_qat")
    print(f"stage 1/2: train the float baseline ({BASELINE})")
    base, base_onnx = _stage(BASELINE, base_dir, overrides)
    weights = os.path.join(base_dir, "last.pdckpt")
    print(f"stage 2/2: prune -50% MACs, fine-tune, QAT, int8 export ({COMPRESSED})")
    comp, comp_onnx = _stage(COMPRESSED, comp_dir, [f"model.weights={weights}", *overrides])
    before, after = measure(base, base_onnx), measure(comp, comp_onnx)
    print(f"\nFashion-MNIST, {len(base.eval_data)} test images; files {base_onnx} and {comp_onnx}\n")
    print(table(before, after))
    return before, after
