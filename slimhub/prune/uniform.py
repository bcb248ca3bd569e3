"""Uniform pruning: the same ratio of channels removed from every prunable group."""
from __future__ import annotations

import numpy as np

from slimhub.prune.graph import DEFAULT_ROUND_TO, build_graph
from slimhub.prune.pruner import apply_plan, make_plan


def step_ratios(group):
    """The ratio at which each removal step of ``group`` (:attr:`Group.removals`) is
    taken: where the channels the ratio keeps fall below the middle of the step."""
    kept = group.size - np.asarray(group.removals)
    return (2 * group.size - kept[:-1] - kept[1:]) / (2 * group.size)


def ratio_removal(group, ratio):
    """Channels of ``group`` that ``ratio`` removes: the allowed count nearest to
    ``ratio * size`` (:attr:`Group.removals`)."""
    return group.removals[int(np.searchsorted(step_ratios(group), ratio, side="right"))]


def uniform_removal(graph, ratio):
    """Channels to remove per group for one ``ratio``."""
    if not isinstance(ratio, (int, float)) or not 0 <= ratio < 1:
        raise ValueError(f"ratio must be a fraction in [0, 1), got {ratio!r}")
    removal = {g.name: ratio_removal(g, ratio) for g in graph.groups}
    return {name: n for name, n in removal.items() if n}


def uniform_order(graph):
    """Group indices in the order a growing uniform ratio takes their removal steps,
    for :meth:`PruneGraph.removal_for_flops`."""
    keys, owners = [], []
    for i, g in enumerate(graph.groups):
        keys.append(step_ratios(g))
        owners.append(np.full(keys[-1].shape, i))
    if not keys:
        return np.zeros(0, dtype=np.int64)
    keys, owners = np.concatenate(keys), np.concatenate(owners)
    return owners[np.lexsort((owners, keys))]


def prune_uniform(model, input_shape, pruned_flops=None, ratio=None, criterion="l1_norm",
                  include=None, exclude=None, round_to=DEFAULT_ROUND_TO):
    """Prune ``model`` in place by one ratio for every group: either ``ratio`` itself,
    or the ratio that removes ``pruned_flops`` of the MACs (0.5: half); every group keeps
    a multiple of ``round_to`` channels (or all of them). Returns the plan."""
    if (pruned_flops is None) == (ratio is None):
        raise ValueError("prune_uniform: give exactly one of pruned_flops and ratio")
    graph = build_graph(model, input_shape, include=include, exclude=exclude, round_to=round_to)
    if ratio is not None:
        removal = uniform_removal(graph, ratio)
    else:
        removal = graph.removal_for_flops(uniform_order(graph), pruned_flops)
    plan = make_plan(model, graph, removal, criterion)
    apply_plan(model, plan)
    return plan
