"""Run the zoo's recipes and regenerate docs/results.md (and a plot of accuracy vs MACs).

    python scripts/reproduce.py --jobs 2              # every Fashion-MNIST row, two at a time
    python scripts/reproduce.py --recipes mobilenet_v1_baseline mobilenet_v1_qat_absmax
    python scripts/reproduce.py --set trainer.epochs=1 --results runs/quick.json --doc /tmp/quick.md
    python scripts/reproduce.py --render-only         # rewrite the doc from the results file
    python scripts/reproduce.py --device gpu
    python scripts/reproduce.py --publish             # ship the measured rows' weights in the zoo
    python scripts/reproduce.py --reexport            # new export files for measured rows, no training

Each row's measured numbers (accuracy, MACs, parameters, exported file size, CPU latency) are
stored in the results file as they are measured, so an interrupted run keeps what it finished
and rerunning skips finished rows unless --force. Reference numbers are the published ImageNet
figures; ours are measured on Fashion-MNIST, so only the deltas are comparable.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

from slimhub.checkpoint import write_json  # sets MKL_DEBUG_CPU_TYPE before paddle loads

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRETRAINED_DIR = os.path.join(ROOT, "slimhub", "model_zoo", "pretrained")
SCAN_IMAGES = 500  # test images the pruning-sensitivity scans evaluate on (one scan is ~100 evaluations)
# architecture -> (its name in the tables, the reference network whose published ImageNet
# numbers its rows are compared with, or None)
ARCHITECTURES = {"mobilenet_v1": ("MobileNetV1 x0.25", "MobileNetV1"),
                 "resnet20": ("ResNet-20 x0.5", "ResNet50"),
                 "vgg11": ("VGG-11 x0.125", None)}
# strategy -> (table, description, published ImageNet top-1 (%) of the reference network per
# reference network); quoted for comparison only, from ../shared/reference/seed_results.md
STRATEGIES = {
    "baseline": ("fp32", "trained alone", {"MobileNetV1": 70.91, "ResNet50": 76.35}),
    "qat_absmax": ("qat", "QAT, X abs_max, W abs_max", {"MobileNetV1": 71.01, "ResNet50": 76.77}),
    "qat_mavg_absmax": ("qat", "QAT, X moving_average_abs_max, W abs_max",
                        {"MobileNetV1": 70.86, "ResNet50": 76.65}),
    "qat_absmax_channelwise": ("qat", "QAT, X abs_max, W channel_wise_abs_max",
                               {"MobileNetV1": 71.13, "ResNet50": 76.80}),
    "prune_uniform50": ("prune", "uniform pruning, -50% MACs", {"MobileNetV1": 69.83}),
    "prune_sensitive50": ("prune", "sensitivity pruning, -50% MACs", {"MobileNetV1": 69.31}),
    "distill": ("distill", "distilled from a ResNet-20 x0.5 teacher", {"MobileNetV1": 71.97}),
    "distill_qat": ("combined", "distillation + int8 QAT", {"MobileNetV1": 72.08}),
    "prune50_qat": ("combined", "pruning -50% MACs + int8 QAT", {"MobileNetV1": 69.70}),
}
# row -> (table, description, reference top-1 or None, reference float top-1 or None, the row
# that is its float baseline or None), in dependency order (baselines first)
ROWS = {f"{arch}_{strategy}": (table, f"{arch_label}, {label}", refs.get(ref_net),
                               STRATEGIES["baseline"][2].get(ref_net),
                               None if strategy == "baseline" else f"{arch}_baseline")
        for strategy, (table, label, refs) in STRATEGIES.items()
        for arch, (arch_label, ref_net) in ARCHITECTURES.items()}
# the small-input MobileNetV1 (total stride 8) on all 60,000 augmented images: the demo's start
ROWS["mobilenet_v1_small_baseline"] = (
    "fp32", "MobileNetV1 x0.25 small-input (stride 8; 60k images, augmented), trained alone",
    STRATEGIES["baseline"][2]["MobileNetV1"], STRATEGIES["baseline"][2]["MobileNetV1"], None)
TABLES = {"fp32": "Float baselines", "qat": "Quantization-aware training (int8)",
          "prune": "Filter pruning", "distill": "Distillation",
          "combined": "Combined strategies"}


def measure_latency(files, input_size, repeats=50):
    """Median CPU latency (ms, batch 1, one thread) of the deployable file: the ONNX file in
    onnxruntime, else the Paddle inference model in paddle.inference."""
    from slimhub.deploy import load

    x = np.random.default_rng(0).normal(size=(1, *input_size)).astype("float32")
    onnx = [f for f in files if f.endswith(".onnx")]
    params = [f for f in files if f.endswith(".pdiparams")]
    if not onnx and not params:
        return None, None
    predictor = load(onnx[0], "onnxruntime") if onnx else load(params[0], "paddle")
    for _ in range(5):
        predictor(x)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        predictor(x)
        times.append(time.perf_counter() - start)
    kind = "onnxruntime" if onnx else "paddle.inference fp32"
    return float(np.median(times) * 1000), kind


def deployed_file(files, input_size, batch_size):
    """The results fields of a row's deployable export among ``files`` (the int8 ONNX file
    if there is one, else the Paddle inference parameters): path, size, CPU latency and, for
    an ONNX file, its own top-1 on the whole test set in onnxruntime and in OpenVINO, in
    batches of the recipe's size (``abs_max`` activation scales come from each batch, so the
    file sees the batches the network was evaluated on)."""
    from slimhub.deploy import cpu_info, load, top1

    files = [f for f in files if os.path.isfile(f)]
    latency, latency_kind = measure_latency(files, input_size)
    deploy = [f for f in files if f.endswith(".onnx")] or [f for f in files if f.endswith(".pdiparams")]
    fields = {"file": deploy[0] if deploy else None,
              "file_size": os.path.getsize(deploy[0]) if deploy else None,
              "latency_ms": latency, "latency_kind": latency_kind, "deploy_cpu": cpu_info().describe()}
    if deploy and deploy[0].endswith(".onnx"):
        from slimhub.data import fashion_mnist
        test = fashion_mnist("test")
        fields["deploy_top1"] = top1(load(deploy[0], "onnxruntime", threads=None), test, batch_size)
        fields["deploy_top1_openvino"] = top1(load(deploy[0], "openvino", threads=None), test, batch_size)
    return fields


def reexport(row):
    """Export a measured row again from its last checkpoint (after a change to the exporters)
    and re-measure its file; the network, hence its accuracy, is unchanged."""
    from slimhub.recipe import load_recipe
    recipe = load_recipe(os.path.join(ROOT, row["recipe"]), row["overrides"])
    recipe.restore()
    for key in ("deploy_top1", "deploy_top1_openvino", "deploy_cpu"):
        row.pop(key, None)
    row.update(deployed_file(recipe.export(), recipe.input_shape, recipe.config["trainer"]["batch_size"]))


def recipe_path(name):
    from slimhub.recipe import find_recipe
    return find_recipe(f"fashion_mnist/{name}")


def dependencies(names, overrides=()):
    """``{row: rows whose checkpoints it starts from}``: the rows whose ``save_dir`` holds the
    weights its model or its teachers load."""
    from slimhub.recipe import check_recipe
    owner = {os.path.normpath(check_recipe(recipe_path(n))["trainer"]["save_dir"]): n for n in ROWS}
    deps = {}
    for name in names:
        config = check_recipe(recipe_path(name), list(overrides))
        weights = [config["model"].get("weights")] + [
            (s.get("teacher") or {}).get("weights") for s in config["strategies"].values()]
        deps[name] = {owner[d] for d in (os.path.normpath(os.path.dirname(w)) for w in weights if w)
                      if d in owner}
    return deps


def scan_sensitivity(path, config, overrides):
    """Run the pruning-sensitivity scan a ``method: sensitive`` recipe (at ``path``, checked
    into ``config``) reads from its ``sensitivity_cache``, on the first SCAN_IMAGES test
    images, unless the cache is complete and newer than the weights it scanned."""
    from slimhub.recipe import load_recipe
    caches = [s["sensitivity_cache"] for s in config["strategies"].values()
              if s["type"] == "prune" and s.get("method") == "sensitive" and s.get("sensitivity_cache")]
    weights = config["model"].get("weights")
    for cache in caches:
        if os.path.exists(cache) and weights and os.path.getmtime(cache) < os.path.getmtime(weights):
            os.remove(cache)  # scanned from an older baseline
        load_recipe(path, [*overrides, f"data.eval_limit={SCAN_IMAGES}"]).sensitivity(
            cache_path=cache, progress=False)


def run_row(name, overrides):
    """Train, evaluate and export one row (its sensitivity scan first, if it needs one);
    returns its results fields."""
    import paddle
    from slimhub.recipe import check_recipe, run_recipe
    path = recipe_path(name)
    config = check_recipe(path, overrides)
    start = time.time()
    scan_sensitivity(path, config, overrides)
    result = run_recipe(path, overrides)
    return {
        "recipe": os.path.relpath(path, ROOT),
        "top1": result["eval"].get("acc_top1"), "top5": result["eval"].get("acc_top5"),
        "flops": result["flops"], "params": result["params"],
        **deployed_file(result["files"], (1, 28, 28), config["trainer"]["batch_size"]),
        "train_minutes": (time.time() - start) / 60, "started": start, "finished": time.time(),
        "overrides": overrides,
        "device": "gpu" if paddle.device.get_device().startswith("gpu") else "cpu",
    }


def update_results(path, name, row):
    """Write one row into the results file; a lock keeps concurrent rows from losing each other."""
    import fcntl
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        results = load_results(path)
        results[name] = row
        write_json(results, path)


def _row_process(name, overrides, device, results_path, force, jobs):
    """One row in its own process (see run_rows)."""
    import shutil
    import paddle
    from slimhub.recipe import check_recipe
    paddle.set_device(device)
    if force:  # start afresh instead of resuming the finished run's checkpoint
        shutil.rmtree(check_recipe(recipe_path(name), overrides)["trainer"]["save_dir"], ignore_errors=True)
    row = {**run_row(name, overrides), "jobs": jobs}
    update_results(results_path, name, row)
    print(f"{name}: top-1 {_pct(row['top1'])}% in {row['train_minutes']:.1f} min", flush=True)


def run_rows(names, overrides, device, results_path, jobs, force):
    """Run ``names`` in ``jobs`` processes at a time, each row once the rows it starts from
    have finished. Each process gets an equal share of the CPU threads. Returns the rows
    that failed or were skipped because a row they start from failed."""
    import multiprocessing
    deps = dependencies(names, overrides)
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // jobs)))
    context = multiprocessing.get_context("spawn")
    pending, running, failed = list(names), {}, []
    while pending or running:
        for name in [n for n in pending if deps[n] & set(failed)]:
            pending.remove(name)
            failed.append(name)
            print(f"{name}: skipped, {sorted(deps[name] & set(failed))} failed", flush=True)
        for name in [n for n in pending if not deps[n] & (set(pending) | set(running))][:jobs - len(running)]:
            pending.remove(name)
            print(f"{name}: running", flush=True)
            running[name] = context.Process(target=_row_process,
                                            args=(name, overrides, device, results_path, force, jobs))
            running[name].start()
        if not running:
            break
        time.sleep(1)
        for name in [n for n, p in running.items() if not p.is_alive()]:
            if running.pop(name).exitcode != 0:
                failed.append(name)
                print(f"{name}: FAILED", flush=True)
    return failed


def publish(name, row):
    """Ship the weights of a measured row in the package (``slimhub/model_zoo/pretrained``)
    and record them in the zoo's manifest with the numbers measured for the row. The
    recipe is restored from its last checkpoint, so pruning plans and quantizers come back
    as trained. Returns the entry's name."""
    from slimhub.callbacks import PruneCallback, QATCallback
    from slimhub.checkpoint import atomic_save
    from slimhub.model_zoo import record_pretrained
    from slimhub.recipe import load_recipe
    recipe = load_recipe(os.path.join(ROOT, row["recipe"]), row["overrides"])
    recipe.restore()
    arch = recipe.config["model"]["name"]
    entry = f"{arch}.fmnist_{name[len(arch) + 1:] if name.startswith(arch + '_') else name}"
    plans = [c.pruning_plan for c in recipe.callbacks if isinstance(c, PruneCallback) and c.pruning_plan]
    qat = [c.quantization for c in recipe.callbacks if isinstance(c, QATCallback) and c.quantization]
    file = os.path.join(PRETRAINED_DIR, f"{entry}.pdparams")
    os.makedirs(PRETRAINED_DIR, exist_ok=True)
    atomic_save(recipe.network.state_dict(), file)
    record_pretrained(entry, model=recipe.network, urls=[os.path.relpath(file, os.path.dirname(PRETRAINED_DIR))],
                      dataset="fashion_mnist", input_size=recipe.input_shape,
                      model_kwargs=recipe.config["model"]["args"], file=file, top1=row["top1"],
                      top5=row["top5"], recipe=row["recipe"], pruning_plan=plans[0] if plans else None,
                      quant_format=qat[0] if qat else None)
    return entry


def _pct(x):
    return f"{100 * x:.2f}" if x is not None else "-"


def _file_top1(row):
    if row.get("deploy_top1") is None:
        return "-"
    openvino = row.get("deploy_top1_openvino")
    return _pct(row["deploy_top1"]) + (f" / {_pct(openvino)}" if openvino is not None else "")


def _delta(x, base):
    return f"{100 * (x - base):+.2f}" if x is not None and base is not None else "-"


def _minutes(results, prefix):
    return sum(r.get("train_minutes", 0) for n, r in results.items() if n.startswith(prefix))


def _wall_minutes(results):
    """Minutes during which at least one row was running (rows rerun later count once)."""
    total, end = 0.0, None
    for start, finish in sorted((r["started"], r["finished"]) for r in results.values() if "started" in r):
        if end is None or start > end:
            total, end = total + finish - start, finish
        elif finish > end:
            total, end = total + finish - end, finish
    return total / 60 if end is not None else None


def commands(results):
    """The reproduce.py command lines that produced ``results``, one per set of options."""
    groups = {}
    for name in ROWS:
        if name in results:
            r = results[name]
            key = (tuple(r["overrides"]), r.get("device", "cpu"), r.get("jobs", 1))
            groups.setdefault(key, []).append(name)
    return ["python scripts/reproduce.py"
            + ("" if len(rows) == len(ROWS) else " --recipes " + " ".join(rows))
            + "".join(f" --set {o}" for o in overrides) + (f" --device {device}" if device != "cpu" else "")
            + f" --jobs {jobs}"
            for (overrides, device, jobs), rows in groups.items()]


def render(results, doc, lines_of_commands):
    wall = _wall_minutes(results)
    lines = ["# Results", "",
             "Generated by `scripts/reproduce.py`; do not edit by hand. Commands:", "",
             *[f"    {c}" for c in lines_of_commands], "",
             *([f"Wall time while rows were running: {wall:.0f} minutes."] if wall else []),
             "Time to scan, train, evaluate and export the rows (minutes of wall time per row, summed; "
             "rows ran side by side): "
             + ", ".join(f"{label} {_minutes(results, arch + '_'):.0f}" for arch, (label, _) in ARCHITECTURES.items())
             + f"; {_minutes(results, ''):.0f} in all.", "",
             "Reference: the published ImageNet top-1 (%) of each strategy and its change from the "
             "ImageNet float baseline of the reference network (MobileNetV1 for the MobileNetV1 rows, "
             "ResNet50 for the ResNet-20 x0.5 rows; none is published for VGG). Ours: top-1 (%) on the "
             "Fashion-MNIST test set "
             "(10k images) and its change from our float baseline of the same network. **The datasets "
             "differ: compare the changes, not the accuracies.** MACs and parameters are counted by "
             "`slimhub.flops` at 1x28x28; the file is the deployable export (int8 ONNX where the row "
             "quantizes, else the Paddle inference parameters); \"int8 file top-1\" is that ONNX file's own "
             "accuracy on the whole test set in onnxruntime / in OpenVINO, on the CPU named below the "
             "tables; latency is the median of batch-1 CPU runs "
             "on one thread, measured on a shared 2-core machine. The recipes train on the first 10,000 of the "
             "60,000 training images (`data.train_limit`). A sensitivity-pruning row first scans its "
             f"baseline on the first {SCAN_IMAGES} test images (cached at the recipe's `sensitivity_cache`; "
             "see [prune.md](prune.md)).", ""]
    for table, title in TABLES.items():
        rows = [(n, ROWS[n]) for arch in ARCHITECTURES for n in ROWS
                if n.startswith(arch + "_") and ROWS[n][0] == table and n in results]
        if not rows:
            continue
        lines += [f"## {title}", "",
                  "| row | reference top-1 (ImageNet) | reference change | ours top-1 (Fashion-MNIST) "
                  "| our change | int8 file top-1 | MACs | params | file | latency | recipe |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for name, (_, label, ref, ref_base, base) in rows:
            r = results[name]
            base_top1 = results.get(base, {}).get("top1") if base else None
            ref_text = f"{ref:.2f}" if ref is not None else "-"
            ref_delta = f"{ref - ref_base:+.2f}" if ref is not None and base else "-"
            size = f"{r['file_size'] / 1e6:.3f} MB" if r.get("file_size") else "-"
            lat = f"{r['latency_ms']:.2f} ms ({r['latency_kind']})" if r.get("latency_ms") else "-"
            lines.append(f"| {label} | {ref_text} | {ref_delta} | {_pct(r['top1'])} | "
                         f"{_delta(r['top1'], base_top1)} | {_file_top1(r)} | "
                         f"{r['flops'] / 1e6:.2f} M | "
                         f"{r['params'] / 1e3:.1f} k | {size} | {lat} | `{r['recipe']}` |")
        lines.append("")
    cpus = sorted({r["deploy_cpu"] for r in results.values() if r.get("deploy_cpu")})
    if cpus:
        lines += [f"int8 files scored and latencies measured on: {'; '.join(cpus)}.", ""]
    plot = os.path.splitext(doc)[0] + "_accuracy_vs_macs.png"
    if plot_results(results, plot):
        lines += [f"![top-1 vs MACs]({os.path.basename(plot)})", ""]
    tmp = doc + ".tmp"
    with open(tmp, "w") as f:
        f.write("\n".join(lines))
    os.replace(tmp, doc)


def plot_results(results, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = [n for n in ROWS if n in results and results[n]["top1"] is not None]
    if not rows:
        return False
    from matplotlib.lines import Line2D
    colors = dict(zip(ARCHITECTURES, ["tab:blue", "tab:orange", "tab:green"]))
    markers = dict(zip(STRATEGIES, "o^vs<DP*X"))
    fig, ax = plt.subplots(figsize=(8, 5))
    for n in rows:
        arch = next(a for a in ARCHITECTURES if n.startswith(a + "_"))
        ax.scatter(results[n]["flops"] / 1e6, 100 * results[n]["top1"], color=colors[arch],
                   marker=markers.get(n[len(arch) + 1:], markers["baseline"]), s=40, alpha=0.8)
    shown = {n[len(a) + 1:] for n in rows for a in ARCHITECTURES if n.startswith(a + "_")}
    arch_legend = ax.legend(handles=[Line2D([], [], color=c, marker="o", linestyle="", label=ARCHITECTURES[a][0])
                                     for a, c in colors.items()], loc="lower right", fontsize=8)
    ax.add_artist(arch_legend)
    ax.legend(handles=[Line2D([], [], color="gray", marker=m, linestyle="", label=STRATEGIES[s][1])
                       for s, m in markers.items() if s in shown],
              loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("MACs per image (M), 1x28x28")
    ax.set_ylabel("Fashion-MNIST top-1 (%)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def load_results(path):
    """The results file's rows (read afresh: several reproduce.py may share the file)."""
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipes", dest="rows", nargs="*", default=list(ROWS),
                        help=f"rows to run, each named after its recipe in fashion_mnist/: {list(ROWS)}")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        help="recipe override applied to every row, e.g. trainer.epochs=1")
    parser.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    parser.add_argument("--results", default="runs/results.json")
    parser.add_argument("--doc", default="docs/results.md")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                        help="rows trained at a time, each in its own process (default: one per CPU core)")
    parser.add_argument("--force", action="store_true",
                        help="rerun rows already in the results file, from scratch")
    parser.add_argument("--render-only", action="store_true")
    parser.add_argument("--reexport", action="store_true",
                        help="export the selected measured rows again from their checkpoints and "
                             "re-measure their files (after a change to the exporters); no training")
    parser.add_argument("--publish", action="store_true",
                        help="after running, ship the weights of the selected measured rows in the zoo")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1, got {args.jobs}")
    unknown = [r for r in args.rows if r not in ROWS]
    if unknown:
        parser.error(f"--recipes: unknown {unknown}; valid: {list(ROWS)}")
    results, failed = load_results(args.results), []
    if args.reexport:
        for name in [r for r in ROWS if r in args.rows and r in results]:
            row = results[name]
            reexport(row)
            update_results(args.results, name, row)
            print(f"{name}: exported again", flush=True)
    elif not args.render_only:
        for name in [r for r in ROWS if r in args.rows and r in results and not args.force]:
            print(f"{name}: already measured, skipped (--force reruns)", flush=True)
        todo = [r for r in ROWS if r in args.rows and (args.force or r not in results)]
        start = time.time()
        failed = run_rows(todo, args.overrides, args.device, args.results, args.jobs, args.force)
        print(f"{len(todo) - len(failed)} rows in {(time.time() - start) / 60:.1f} min"
              + (f"; failed: {failed}" if failed else ""), flush=True)
    results = load_results(args.results)
    render(results, args.doc, commands(results))
    print(f"wrote {args.doc}")
    if args.publish:
        for name in [r for r in ROWS if r in args.rows and r in results]:
            print(f"published {publish(name, results[name])}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
