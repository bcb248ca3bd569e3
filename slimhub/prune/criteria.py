"""Filter importance criteria: which channels of a group to keep.

A criterion maps a 2-D array of filters (one row per output channel) to one score
per row; higher means more important. A group's score is the sum of the scores of
the layers whose output channels form it (all inputs of a residual add).
"""
from __future__ import annotations

import numpy as np

from slimhub.prune.layers import REGISTER_HINT, prunable_entry


def l1_norm(filters):
    """Sum of absolute weights of each filter."""
    return np.abs(filters).sum(axis=1, dtype=np.float64)


def l2_norm(filters):
    """Euclidean norm of each filter."""
    return np.sqrt(np.einsum("ij,ij->i", filters, filters, dtype=np.float64))


def fpgm(filters):
    """Sum of distances to all other filters (FPGM, He et al. 2019): filters near the
    geometric median are the most replaceable and score lowest."""
    filters = np.asarray(filters, dtype=np.float64)
    sq = (filters * filters).sum(axis=1)
    d2 = sq[:, None] + sq[None, :] - 2.0 * (filters @ filters.T)
    return np.sqrt(np.maximum(d2, 0.0)).sum(axis=1)


CRITERIA = {"l1_norm": l1_norm, "l2_norm": l2_norm, "fpgm": fpgm}


def get_criterion(name):
    """The criterion registered as ``name`` in :data:`CRITERIA`."""
    if name not in CRITERIA:
        raise KeyError(f"unknown pruning criterion {name!r}; valid names: {sorted(CRITERIA)}")
    return CRITERIA[name]


def filters_of(layer):
    """The filters making each output channel of ``layer`` (a Conv2D, Linear or any type
    whose entry in the layer table makes channels) as a ``[channels, -1]`` array."""
    entry = prunable_entry(layer)
    if entry is None:
        raise TypeError(f"filters_of: slimhub cannot prune a {type(layer).__name__}; {REGISTER_HINT}")
    return entry.filters(layer)


def select_kept(scores, remove, blocks=1):
    """Indices (sorted) kept when removing ``remove`` lowest-scoring channels, the
    same number from each of ``blocks`` equal contiguous blocks. Ties: the later
    channel goes first."""
    scores = np.asarray(scores, dtype=np.float64)
    n = scores.shape[0]
    if blocks <= 0 or n % blocks or remove % blocks or not 0 <= remove <= n - blocks:
        raise ValueError(f"cannot remove {remove} of {n} channels in {blocks} equal blocks "
                         "keeping at least one per block")
    size, per_block = n // blocks, remove // blocks
    kept = []
    for b in range(blocks):
        block = scores[b * size:(b + 1) * size]
        order = np.argsort(-block, kind="stable")  # most important first, earlier first on ties
        kept.append(np.sort(order[: size - per_block]) + b * size)
    return np.concatenate(kept)
