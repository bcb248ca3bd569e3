"""Pruning plans: which channels each layer keeps, applied physically.

A plan is a JSON-able dict::

    {"format": "slimhub.prune_plan", "version": 1,
     "layers": {"features.0": {"type": "Conv2D",
                               "out_channels": {"size": 32, "keep": [0, 3, ...]}}, ...}}

``size`` is the width of that axis before the plan is applied and ``keep`` the
channel indices that stay, in order. The axes of a layer type are those of its entry in
the layer table (:mod:`slimhub.prune.layers`): ``out_channels`` / ``in_channels`` of a
Conv2D or Conv2DTranspose, ``out_features`` / ``in_features`` of a Linear,
``num_features`` of a batch norm. Applying a plan replaces each reshaped parameter by a
new, smaller Parameter and updates the layer's attributes, so the model trains on,
saves with ``paddle.jit.save``, and can be rebuilt from its unpruned definition
(:func:`load_pruned`).
"""
from __future__ import annotations

import os

import numpy as np

from slimhub.checkpoint import read_json, write_json
from slimhub.prune.criteria import filters_of, get_criterion, select_kept
from slimhub.prune.layers import REGISTER_HINT, prunable_entry

PLAN_FORMAT = "slimhub.prune_plan"
PLAN_VERSION = 1


def empty_plan():
    """A plan that prunes nothing (the start of a chain of :func:`compose_plans`)."""
    return {"format": PLAN_FORMAT, "version": PLAN_VERSION, "layers": {}}


def make_plan(model, graph, removal, criterion="l1_norm"):
    """The plan removing ``removal[group name]`` channels of each group of ``graph``
    (a :class:`~slimhub.prune.graph.PruneGraph` of ``model``), choosing the channels
    with ``criterion`` (a name in :data:`~slimhub.prune.criteria.CRITERIA`)."""
    score_fn = get_criterion(criterion)
    layers = dict(model.named_sublayers(include_self=True))
    known = {g.name for g in graph.groups}
    unknown = sorted(set(removal) - known)
    if unknown:
        raise KeyError(f"make_plan: no prunable groups named {unknown}; groups: {sorted(known)}")
    removed = {}  # (layer name, axis) -> removed indices
    for group in graph.groups:
        count = int(removal.get(group.name, 0))
        if count == 0:
            continue
        if count not in group.removals:
            blocks = f" in {group.blocks} equal blocks" if group.blocks > 1 else ""
            raise ValueError(f"make_plan: group {group.name!r} cannot lose {count} of its {group.size} "
                             f"channels: it keeps all of them or a positive multiple of {group.multiple} "
                             f"(round_to={graph.round_to}{blocks})")
        scores = sum(score_fn(filters_of(layers[s])) for s in group.sources)
        kept = select_kept(scores, count, group.blocks)
        gone = np.setdiff1d(np.arange(group.size), kept)
        for m in group.members:
            idx = (gone[:, None] * m.block + m.offset * m.block + np.arange(m.block)).ravel()
            for axis in m.axes:
                removed.setdefault((m.layer, axis), []).append(idx)
    plan = empty_plan()
    for (name, axis), parts in removed.items():
        layer = layers[name]
        size = prunable_entry(layer).axes(layer)[axis]
        keep = np.setdiff1d(np.arange(size), np.concatenate(parts))
        entry = plan["layers"].setdefault(name, {"type": type(layer).__name__})
        entry[axis] = {"size": int(size), "keep": [int(i) for i in keep]}
    return plan


# ------------------------------------------------------------------ apply

def _check_plan(plan, source):
    if not isinstance(plan, dict) or plan.get("format") != PLAN_FORMAT:
        raise ValueError(f"{source}: not a slimhub pruning plan (expected format {PLAN_FORMAT!r})")
    if plan.get("version") != PLAN_VERSION:
        raise ValueError(f"{source}: plan version {plan.get('version')!r} is not supported "
                         f"(this slimhub reads version {PLAN_VERSION})")
    if not isinstance(plan.get("layers"), dict):
        raise ValueError(f"{source}: plan has no 'layers' mapping")


def _keep(entry, axis, size, where):
    """The validated kept indices of ``axis`` (all of them when the plan omits it)."""
    spec = entry.get(axis)
    if spec is None:
        return np.arange(size)
    if spec.get("size") != size:
        raise ValueError(f"{where}: {axis} is {size} in the model but {spec.get('size')!r} in the "
                         "plan; apply a plan to the model it was made for (unpruned definition)")
    keep = np.asarray(spec.get("keep"), dtype=np.int64)
    if keep.ndim != 1 or keep.size == 0 or keep[0] < 0 or keep[-1] >= size or np.any(np.diff(keep) <= 0):
        raise ValueError(f"{where}: {axis} keep must be increasing indices in [0, {size}), "
                         f"got {spec.get('keep')!r:.80}")
    return keep


def apply_plan(model, plan, source="plan"):
    """Prune ``model`` in place as ``plan`` says; returns ``model``. ``source`` names
    the plan in error messages (e.g. its file)."""
    _check_plan(plan, source)
    layers = dict(model.named_sublayers(include_self=True))
    missing = sorted(set(plan["layers"]) - set(layers))
    if missing:
        raise KeyError(f"{source}: the model has no layers named {missing[:5]}; "
                       "was the plan made for another model?")
    for name, entry in plan["layers"].items():
        layer = layers[name]
        where = f"{source}: layer {name!r}"
        if entry.get("type") != type(layer).__name__:
            raise TypeError(f"{where} is a {type(layer).__name__} in the model but "
                            f"{entry.get('type')!r} in the plan")
        pruning = prunable_entry(layer)
        if pruning is None:
            raise TypeError(f"{where}: slimhub cannot prune a {type(layer).__name__} (no entry in the "
                            f"layer table, or a forward of its own); {REGISTER_HINT}")
        sizes = pruning.axes(layer)
        extra = sorted(set(entry) - {"type"} - set(sizes))
        if extra:
            raise ValueError(f"{where}: unknown axes {extra} for a {type(layer).__name__}")
        pruning.apply(layer, {axis: _keep(entry, axis, size, where) for axis, size in sizes.items()}, where)
    return model


def compose_plans(first, second):
    """One plan doing ``first`` then ``second`` (made on the model ``first`` produced)."""
    _check_plan(first, "first plan")
    _check_plan(second, "second plan")
    out = empty_plan()
    for name in list(first["layers"]) + [n for n in second["layers"] if n not in first["layers"]]:
        a, b = first["layers"].get(name, {}), second["layers"].get(name, {})
        entry = {"type": a.get("type", b.get("type"))}
        for axis in [k for k in a if k != "type"] + [k for k in b if k != "type" and k not in a]:
            if axis in a and axis in b:
                if b[axis]["size"] != len(a[axis]["keep"]):
                    raise ValueError(f"compose_plans: layer {name!r} {axis}: the second plan expects "
                                     f"{b[axis]['size']} channels, the first keeps {len(a[axis]['keep'])}")
                keep = [a[axis]["keep"][i] for i in b[axis]["keep"]]
                entry[axis] = {"size": a[axis]["size"], "keep": keep}
            else:
                entry[axis] = dict(a.get(axis) or b[axis])
        out["layers"][name] = entry
    return out


# ------------------------------------------------------------------- files

def save_plan(plan, path):
    """Write ``plan`` to ``path`` as JSON (atomically)."""
    _check_plan(plan, "save_plan")
    write_json(plan, path)


def load_plan(path):
    """Read a plan written by :func:`save_plan`."""
    plan = read_json(path, "pruning plan")
    _check_plan(plan, path)
    return plan


def load_pruned(model, plan):
    """Rebuild a pruned model from its unpruned definition: apply ``plan`` (a dict or
    a path to a saved plan) to ``model``, ready for the pruned weights
    (``model.set_state_dict(...)``). Returns ``model``."""
    if isinstance(plan, (str, os.PathLike)):
        return apply_plan(model, load_plan(plan), source=str(plan))
    return apply_plan(model, plan)
