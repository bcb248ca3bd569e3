"""The layer table: for each layer type, how its channels couple, how a plan cuts it,
how many MACs it costs and which filters a criterion ranks.

The trace (:mod:`slimhub.prune.trace`), the plans (:mod:`slimhub.prune.pruner`), the
criteria and :func:`slimhub.flops.flops` all read the same :class:`LayerEntry` of a
layer's type, so the MACs pruning aims at are the MACs the counter counts. A type is
looked up along its base classes; a subclass with its own ``forward`` is still counted
as its base but not pruned (what it computes is unknown). :func:`register_layer` adds
a type or replaces an entry.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import paddle
from paddle import nn

OUTPUT_CHANNELS = "output channels"
"""Axis name in the :class:`Macs` of a layer that is only counted (a pool): the channels
(axis 1) of its output, which pruning the layers before it shrinks."""

REGISTER_HINT = "add its type with slimhub.prune.register_layer (docs/prune.md)"


class UnsupportedInput(Exception):
    """Raised by :meth:`LayerEntry.coupling` for a call it cannot follow; the message
    says why. The channels the call touches are then left unpruned, with a warning."""


@dataclass(frozen=True)
class Coupling:
    """How one call's channel axes meet the channels (axis 1) of its input and output.

    ``reads``: the axis that is the input's channels; ``makes``: the axis that is the
    output's channels, new channels ranked by :meth:`LayerEntry.filters`; both in
    ``groups`` equal blocks (a grouped convolution keeps as many of each block).
    ``through``: axes that are the input's channels and stay the output's, channel i in
    making channel i out (a batch norm, a depthwise convolution); the layer joins the
    group in the role ``role``.
    """
    reads: str | None = None
    makes: str | None = None
    groups: int = 1
    through: tuple = ()
    role: str = "through"

    def __post_init__(self):
        if isinstance(self.through, str):
            raise TypeError(f"Coupling: through must be a tuple of axis names, got {self.through!r}")
        if self.through and (self.reads or self.makes):
            raise ValueError(f"Coupling: through={self.through!r} excludes reads and makes "
                             f"(got reads={self.reads!r}, makes={self.makes!r})")
        if not (self.through or self.reads or self.makes):
            raise ValueError("Coupling: give reads, makes or through")
        if isinstance(self.groups, bool) or not isinstance(self.groups, int) or self.groups < 1:
            raise ValueError(f"Coupling: groups must be a positive integer, got {self.groups!r}")


@dataclass(frozen=True)
class Macs:
    """MACs per sample of one call: ``unit`` times, for each ``(axis, size, per)`` of
    ``counts``, the channel count of ``axis`` (``size`` now) divided by ``per``. Pruning
    shrinks the counts of pruned axes; ``unit`` must not depend on them."""
    unit: int
    counts: tuple = ()

    @property
    def total(self):
        return self.unit * math.prod(size // per for _, size, per in self.counts)


class LayerEntry:
    """How slimhub prunes and counts one layer type; subclass it and override what the
    type needs. The base prunes nothing and counts no MACs."""

    def axes(self, layer):
        """``{axis name: size}`` of the channel axes a plan can cut; ``{}``: the layer is
        only counted and the trace follows the operations inside it."""
        return {}

    def coupling(self, layer, x):
        """The :class:`Coupling` of a call on input ``x``; raise :class:`UnsupportedInput`
        for an input it cannot follow."""
        raise NotImplementedError(f"{type(self).__name__} gives axes but no coupling")

    def filters(self, layer):
        """The weights making each channel of the ``makes`` axis, as a ``[channels, -1]``
        array (what a criterion scores)."""
        raise NotImplementedError(f"{type(self).__name__} makes channels but gives no filters")

    def apply(self, layer, keep, where):
        """Cut ``layer`` in place to the channels ``keep[axis]`` (increasing indices, one
        array for every axis of :meth:`axes`); ``where`` names the layer in errors."""
        raise NotImplementedError(f"{type(self).__name__} gives axes but no apply")

    def macs(self, layer, x, y):
        """:class:`Macs` of a call with first input ``x`` and output ``y``."""
        return Macs(0)


_TABLE = {}


def register_layer(layer_type, entry):
    """Prune and count ``layer_type`` (a ``paddle.nn.Layer`` subclass) and its subclasses
    that keep its ``forward`` as ``entry`` (a :class:`LayerEntry`) says; replaces an
    earlier entry of the type. Returns ``entry``."""
    if not (isinstance(layer_type, type) and issubclass(layer_type, nn.Layer)):
        raise TypeError(f"register_layer: layer_type must be a paddle.nn.Layer subclass, got {layer_type!r}")
    if not isinstance(entry, LayerEntry):
        raise TypeError(f"register_layer: the entry for {layer_type.__name__} must be a "
                        f"slimhub.prune.LayerEntry, got {entry!r}")
    _TABLE[layer_type] = entry
    return entry


def _lookup(layer):
    for cls in type(layer).__mro__:
        if cls in _TABLE:
            return cls, _TABLE[cls]
    return None, None


def counted_entry(layer):
    """The entry counting ``layer``'s MACs (its type's or its nearest registered base's), or None."""
    return _lookup(layer)[1]


def prunable_entry(layer):
    """The entry pruning ``layer``, or None: its type (or a registered base whose ``forward``
    it keeps) has an entry with axes."""
    cls, entry = _lookup(layer)
    if entry is None or type(layer).forward is not cls.forward or not entry.axes(layer):
        return None
    return entry


@contextmanager
def recording_calls(model, record):
    """Within the block, ``record(name, layer, entry, x, y)`` runs after every call of a
    sublayer of ``model`` that has an entry (``x``: its first input, ``y``: its output,
    the first one of a tuple)."""
    def make_hook(name, entry):
        def hook(layer, inputs, output):
            y = output[0] if isinstance(output, (tuple, list)) and output else output
            if inputs and isinstance(inputs[0], paddle.Tensor) and isinstance(y, paddle.Tensor):
                record(name, layer, entry, inputs[0], y)
        return hook

    hooks = []
    for name, layer in model.named_sublayers(include_self=True):
        entry = counted_entry(layer)
        if entry is not None:
            hooks.append(layer.register_forward_post_hook(make_hook(name, entry)))
    try:
        yield
    finally:
        for h in hooks:
            h.remove()


# ------------------------------------------------------------- helpers

def per_sample(t):
    """Elements of one sample of ``t`` (axis 0 is the batch)."""
    return int(np.prod(t.shape[1:]))


def replace_parameter(layer, attr, value):
    """Swap ``layer.<attr>`` for a NEW Parameter holding ``value`` (same dtype, trainability,
    optimizer, regularizer and clipping settings); nothing when the layer has none."""
    old = getattr(layer, attr)
    if old is None:
        return
    new = layer.create_parameter(shape=list(value.shape), dtype=old.dtype,
                                 default_initializer=nn.initializer.Constant(0.0))
    new.set_value(np.ascontiguousarray(value))
    new.stop_gradient = old.stop_gradient
    new.optimize_attr = dict(old.optimize_attr)
    new.regularizer = old.regularizer
    new.need_clip = old.need_clip
    setattr(layer, attr, new)


def _equal_per_group(keep, size, groups, where, axis):
    """``keep`` split by group, as indices within each group; the same count in each."""
    per = size // groups
    counts = np.bincount(keep // per, minlength=groups)
    if np.any(counts != counts[0]):
        raise ValueError(f"{where}: {axis} must keep the same number of channels in each of "
                         f"its {groups} groups, got {counts.tolist()}")
    return [keep[keep // per == g] - g * per for g in range(groups)]


def _cut_grouped(w, keep_rows, keep_cols, groups, where, row_axis, col_axis):
    """A ``[rows, cols / groups, ...]`` weight cut to ``keep_rows`` and, within each kept
    row's group, to the kept columns of that group."""
    if groups == 1:
        return w[keep_rows][:, keep_cols]
    _equal_per_group(keep_rows, w.shape[0], groups, where, row_axis)
    cols = _equal_per_group(keep_cols, w.shape[1] * groups, groups, where, col_axis)
    idx = np.stack([cols[g] for g in keep_rows // (w.shape[0] // groups)])
    return np.take_along_axis(w[keep_rows], idx[:, :, None, None], axis=1)


def _per_channel(macs, t):
    """``macs`` in proportion to the channels (axis 1) of ``t``, a layer only counted."""
    channels = int(t.shape[1]) if t.ndim > 1 else 1
    return Macs(macs // channels, ((OUTPUT_CHANNELS, channels, 1),))


# ------------------------------------------------------------- entries

class Conv2DEntry(LayerEntry):
    """Conv2D, weight ``[out, in / groups, kh, kw]``: dense, grouped (input and output in
    ``groups`` blocks) or depthwise (groups = in = out: channel i in makes channel i out).
    MACs: output elements x (in_channels / groups) x kernel area."""
    rows, cols = "out_channels", "in_channels"  # what the weight's axes 0 and 1 are

    def axes(self, layer):
        return {"out_channels": layer._out_channels, "in_channels": layer._in_channels}

    @staticmethod
    def depthwise(layer):
        return layer._groups == layer._in_channels == layer._out_channels

    def coupling(self, layer, x):
        if layer._data_format != "NCHW" or x.ndim != 4:
            raise UnsupportedInput("only NCHW input is supported")
        if self.depthwise(layer):
            return Coupling(through=("out_channels", "in_channels"), role="dw")
        return Coupling(reads="in_channels", makes="out_channels", groups=layer._groups)

    def filters(self, layer):
        w = layer.weight.numpy()
        return w.reshape(w.shape[0], -1)

    def apply(self, layer, keep, where):
        keep_out, keep_in = keep["out_channels"], keep["in_channels"]
        w, groups = layer.weight.numpy(), layer._groups
        if self.depthwise(layer):
            if not np.array_equal(keep_in, keep_out):
                raise ValueError(f"{where}: a depthwise {type(layer).__name__} must keep the same "
                                 "in_channels and out_channels")
            w, groups = w[keep_out], len(keep_out)
        else:
            w = _cut_grouped(w, keep[self.rows], keep[self.cols], groups, where, self.rows, self.cols)
        replace_parameter(layer, "weight", w)
        if layer.bias is not None:
            replace_parameter(layer, "bias", layer.bias.numpy()[keep_out])
        layer._in_channels, layer._out_channels, layer._groups = len(keep_in), len(keep_out), groups

    def walked(self, x, y):
        """The tensor each of whose elements costs one weight column: the output."""
        return y

    def macs(self, layer, x, y):
        # from the weight's shape, not the layer's attributes: another tool may have
        # reshaped the weights and left those stale
        w, groups = layer.weight.shape, layer._groups
        unit = per_sample(self.walked(x, y)) // w[0] * int(np.prod(w[2:]))
        if self.depthwise(layer):
            return Macs(unit * w[1], ((self.rows, w[0], 1),))
        return Macs(unit, ((self.rows, w[0], 1), (self.cols, w[1] * groups, groups)))


class Conv2DTransposeEntry(Conv2DEntry):
    """Conv2DTranspose, weight ``[in, out / groups, kh, kw]``; couples as a Conv2D.
    MACs: input elements x (out_channels / groups) x kernel area."""
    rows, cols = "in_channels", "out_channels"

    def filters(self, layer):
        w, groups = layer.weight.numpy(), layer._groups
        per_in, per_out = w.shape[0] // groups, w.shape[1]
        return w.reshape(groups, per_in, per_out, -1).transpose(0, 2, 1, 3).reshape(groups * per_out, -1)

    def walked(self, x, y):
        """Each input element is spread over one weight row: the input."""
        return x


class LinearEntry(LayerEntry):
    """Linear, weight ``[in, out]``, on ``[batch, features]`` input (a flattened map: each
    channel is several features). MACs: output elements x in_features."""

    def axes(self, layer):
        fin, fout = layer.weight.shape
        return {"out_features": fout, "in_features": fin}

    def coupling(self, layer, x):
        if x.ndim != 2:
            raise UnsupportedInput(f"input of shape {list(x.shape)}, only [batch, features]")
        return Coupling(reads="in_features", makes="out_features")

    def filters(self, layer):
        return layer.weight.numpy().T

    def apply(self, layer, keep, where):
        keep_out = keep["out_features"]
        replace_parameter(layer, "weight", layer.weight.numpy()[keep["in_features"]][:, keep_out])
        if layer.bias is not None:
            replace_parameter(layer, "bias", layer.bias.numpy()[keep_out])

    def macs(self, layer, x, y):
        fin, fout = layer.weight.shape
        return Macs(per_sample(y) // fout, (("out_features", fout, 1), ("in_features", fin, 1)))


class BatchNormEntry(LayerEntry):
    """Batch norms on channel-first input: channel i in is channel i out; weight, bias,
    mean and variance are cut along. MACs: one per output element (scale and shift)."""

    def axes(self, layer):
        return {"num_features": int(layer._mean.shape[0])}

    def coupling(self, layer, x):
        fmt = getattr(layer, "_data_format", getattr(layer, "_data_layout", None))
        if fmt not in ("NC", "NCL", "NCHW"):
            raise UnsupportedInput("only channel-first input is supported")
        return Coupling(through=("num_features",), role="bn")

    def apply(self, layer, keep, where):
        kept = keep["num_features"]
        for attr in ("weight", "bias", "_mean", "_variance"):
            if getattr(layer, attr, None) is not None:
                replace_parameter(layer, attr, getattr(layer, attr).numpy()[kept])
        if hasattr(layer, "_num_features"):
            layer._num_features = len(kept)

    def macs(self, layer, x, y):
        channels = int(layer._mean.shape[0])
        return Macs(per_sample(y) // channels, (("num_features", channels, 1),))


class PoolEntry(LayerEntry):
    """MaxPool2D / AvgPool2D, counted only: output elements x kernel area."""

    def macs(self, layer, x, y):
        k = layer.ksize
        area = k * k if isinstance(k, int) else int(np.prod(k))
        return _per_channel(per_sample(y) * area, y)


class AdaptivePoolEntry(LayerEntry):
    """AdaptiveAvgPool2D / AdaptiveMaxPool2D, counted only: one per input element."""

    def macs(self, layer, x, y):
        return _per_channel(per_sample(x), x)


BATCH_NORMS = (nn.BatchNorm1D, nn.BatchNorm2D, nn.BatchNorm, nn.SyncBatchNorm)

for _types, _entry in [((nn.Conv2D,), Conv2DEntry()), ((nn.Conv2DTranspose,), Conv2DTransposeEntry()),
                       ((nn.Linear,), LinearEntry()), (BATCH_NORMS, BatchNormEntry()),
                       ((nn.MaxPool2D, nn.AvgPool2D), PoolEntry()),
                       ((nn.AdaptiveAvgPool2D, nn.AdaptiveMaxPool2D), AdaptivePoolEntry())]:
    for _type in _types:
        register_layer(_type, _entry)
