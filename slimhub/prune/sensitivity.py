"""Sensitivity-based pruning: measure how much each group can lose, then prune the
insensitive groups more.

:func:`scan_sensitivity` prunes one group at a time by each ratio (on a copy of the
model) and records ``eval_fn(model)``; results go to a JSON cache after every
evaluation, so an interrupted scan resumes where it stopped. :func:`prune_sensitive`
then removes channels in order of least predicted loss until the MACs target is
met. A sensitivity record::

    {"format": "slimhub.sensitivity", "version": 1, "criterion": "l1_norm",
     "baseline": 0.91, "groups": {"conv1": {"size": 32, "metrics": {"0.1": 0.90, ...}}}}
"""
from __future__ import annotations

import copy
import os

import numpy as np

from slimhub.checkpoint import atomic_path
from slimhub.prune.criteria import get_criterion
from slimhub.prune.graph import DEFAULT_ROUND_TO, build_graph
from slimhub.checkpoint import read_json, write_json
from slimhub.prune.pruner import apply_plan, make_plan
from slimhub.prune.uniform import ratio_removal

SENSITIVITY_FORMAT = "slimhub.sensitivity"
DEFAULT_RATIOS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def _key(ratio):
    return f"{ratio:g}"


def load_sensitivity(path):
    """Read a sensitivity record written by :func:`scan_sensitivity`."""
    record = read_json(path, "sensitivity file")
    if not isinstance(record, dict) or record.get("format") != SENSITIVITY_FORMAT:
        raise ValueError(f"{path!r} is not a slimhub sensitivity file")
    return record


def _metric(eval_fn, model):
    value = eval_fn(model)
    try:
        return float(value)
    except (TypeError, ValueError):
        raise TypeError(f"eval_fn must return a number (higher is better), got {value!r:.80}") from None


def scan_sensitivity(model, input_shape, eval_fn, ratios=DEFAULT_RATIOS, criterion="l1_norm",
                     cache_path=None, include=None, exclude=None):
    """Metric of ``model`` with each group pruned alone by each ratio.

    ``eval_fn(model) -> float`` scores a model, higher is better (accuracy; pass the
    negative of a loss). ``model`` itself is never changed. With ``cache_path`` every
    result is saved as it comes and results already in the file are reused.
    """
    if not callable(eval_fn):
        raise TypeError(f"scan_sensitivity: eval_fn must be callable(model) -> float, got {eval_fn!r}")
    ratios = [float(r) for r in ratios]
    if not ratios or any(not 0 < r < 1 for r in ratios):
        raise ValueError(f"scan_sensitivity: ratios must be fractions in (0, 1), got {ratios!r}")
    get_criterion(criterion)
    graph = build_graph(model, input_shape, include=include, exclude=exclude)
    record = {"format": SENSITIVITY_FORMAT, "version": 1, "criterion": criterion, "groups": {}}
    if cache_path is not None and os.path.exists(cache_path):
        record = load_sensitivity(cache_path)
        if record.get("criterion") != criterion:
            raise ValueError(f"{cache_path}: scanned with criterion {record.get('criterion')!r}, "
                             f"not {criterion!r}; use another cache file")
    for g in graph.groups:
        cached = record["groups"].get(g.name)
        if cached is not None and cached["size"] != g.size:
            raise ValueError(f"{cache_path}: group {g.name!r} has {cached['size']} channels in the "
                             f"cache but {g.size} in the model; use another cache file")
    if "baseline" not in record:
        record["baseline"] = _metric(eval_fn, model)
        if cache_path is not None:
            write_json(record, cache_path)
    for g in graph.groups:
        entry = record["groups"].setdefault(g.name, {"size": g.size, "metrics": {}})
        for ratio in ratios:
            if _key(ratio) in entry["metrics"]:
                continue
            remove = ratio_removal(g, ratio)
            if remove == 0:
                metric = record["baseline"]
            else:
                pruned = copy.deepcopy(model)
                apply_plan(pruned, make_plan(pruned, graph, {g.name: remove}, criterion))
                metric = _metric(eval_fn, pruned)
            entry["metrics"][_key(ratio)] = metric
            if cache_path is not None:
                write_json(record, cache_path)
    return record


def _loss_curve(record, name):
    """Ratios and predicted loss (baseline - metric, made non-decreasing from 0)."""
    metrics = record["groups"][name]["metrics"]
    ratios = sorted(float(r) for r in metrics)
    loss = np.maximum.accumulate([0.0] + [record["baseline"] - metrics[_key(r)] for r in ratios])
    return np.array([0.0] + ratios), loss


def sensitive_order(graph, record):
    """Group indices in order of least predicted loss after each removal step
    (:attr:`Group.removals`), for :meth:`PruneGraph.removal_for_flops`. A group already
    pruned (gradual pruning) continues from where it is; no group goes beyond the
    largest scanned ratio."""
    keys, ratios_all, owners = [], [], []
    for i, g in enumerate(graph.groups):
        if g.name not in record["groups"]:
            raise KeyError(f"group {g.name!r} has no sensitivity; scan the model with the same "
                           "include/exclude")
        xs, loss = _loss_curve(record, g.name)
        original = record["groups"][g.name]["size"]
        ratio = (original - g.size + np.asarray(g.removals[1:])) / original
        ratio = ratio[ratio <= xs[-1] + 1e-9]
        keys.append(np.interp(ratio, xs, loss))
        ratios_all.append(ratio)
        owners.append(np.full(ratio.shape, i))
    if not keys:
        return np.zeros(0, dtype=np.int64)
    keys, ratios_all, owners = map(np.concatenate, (keys, ratios_all, owners))
    return owners[np.lexsort((owners, ratios_all, keys))]


def prune_sensitive(model, input_shape, record, pruned_flops, criterion="l1_norm",
                    include=None, exclude=None, round_to=DEFAULT_ROUND_TO):
    """Prune ``model`` in place to remove ``pruned_flops`` of its MACs, each group by
    the ratio its sensitivity ``record`` (from :func:`scan_sensitivity`) allows, keeping
    a multiple of ``round_to`` channels (or all of them). Returns the plan."""
    graph = build_graph(model, input_shape, include=include, exclude=exclude, round_to=round_to)
    removal = graph.removal_for_flops(sensitive_order(graph, record), pruned_flops)
    plan = make_plan(model, graph, removal, criterion)
    apply_plan(model, plan)
    return plan


def plot_sensitivity(record, path):
    """Draw metric vs pruned ratio for every group into the PNG file ``path``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for name, entry in record["groups"].items():
        ratios = sorted(float(r) for r in entry["metrics"])
        ax.plot([0.0] + ratios, [record["baseline"]] + [entry["metrics"][_key(r)] for r in ratios],
                marker="o", markersize=3, label=name)
    ax.set_xlabel("ratio of the group's channels pruned")
    ax.set_ylabel("metric")
    ax.set_title(f"pruning sensitivity ({record['criterion']})")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    atomic_path(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    return path
