"""Uniform pruning: the same ratio of channels removed from every prunable group."""
from __future__ import annotations

import numpy as np

from slimhub.prune.graph import build_graph
from slimhub.prune.pruner import apply_plan, make_plan


def ratio_removal(group, ratio):
    """Channels of ``group`` that ``ratio`` removes (rounded per block, keeping at least
    one channel in every block)."""
    per_block = group.size // group.blocks
    return min(per_block - 1, int(ratio * per_block + 0.5)) * group.blocks


def uniform_removal(graph, ratio):
    """Channels to remove per group for one ``ratio``."""
    if not isinstance(ratio, (int, float)) or not 0 <= ratio < 1:
        raise ValueError(f"ratio must be a fraction in [0, 1), got {ratio!r}")
    removal = {g.name: ratio_removal(g, ratio) for g in graph.groups}
    return {name: n for name, n in removal.items() if n}


def uniform_order(graph):
    """Group indices in the order a growing uniform ratio removes their channels (one
    entry per channel of each block), for :meth:`PruneGraph.removal_for_flops`."""
    keys, owners = [], []
    for i, g in enumerate(graph.groups):
        per_block = g.size // g.blocks
        k = np.arange(1, per_block)
        keys.append((k - 0.5) / per_block)  # the ratio at which the k-th channel goes
        owners.append(np.full(k.shape, i))
    if not keys:
        return np.zeros(0, dtype=np.int64)
    keys, owners = np.concatenate(keys), np.concatenate(owners)
    return owners[np.lexsort((owners, keys))]


def prune_uniform(model, input_shape, pruned_flops=None, ratio=None, criterion="l1_norm",
                  include=None, exclude=None):
    """Prune ``model`` in place by one ratio for every group: either ``ratio`` itself,
    or the ratio that removes ``pruned_flops`` of the MACs (0.5: half). Returns the plan."""
    if (pruned_flops is None) == (ratio is None):
        raise ValueError("prune_uniform: give exactly one of pruned_flops and ratio")
    graph = build_graph(model, input_shape, include=include, exclude=exclude)
    if ratio is not None:
        removal = uniform_removal(graph, ratio)
    else:
        removal = graph.removal_for_flops(uniform_order(graph), pruned_flops)
    plan = make_plan(model, graph, removal, criterion)
    apply_plan(model, plan)
    return plan
