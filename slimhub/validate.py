"""Checks of arguments, data and training state; each failure is a one-line error that
names the argument and the bad value."""
from __future__ import annotations

import numbers
import os

import numpy as np
import paddle
from paddle import nn

from slimhub import distributed


def first_line(exc):
    """The first non-empty line of ``exc``'s message, at most 300 characters."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return (lines[0] if lines else type(exc).__name__)[:300]


# ------------------------------------------------------------------ arguments
def boolean(value, what):
    """``value`` if it is True or False, else a ``TypeError`` naming ``what``."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{what} must be True or False, got {value!r}")
    return bool(value)


def integer(value, what, minimum=1, maximum=None):
    """``value`` as an int if it is an integer (not a bool) in ``[minimum, maximum]``, else a
    ``ValueError`` naming ``what``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral) or \
            value < minimum or (maximum is not None and value > maximum):
        if maximum is not None:
            need = f"an integer in [{minimum}, {maximum}]"
        else:
            need = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"{what} must be {need}, got {value!r}")
    return int(value)


def folder(value, what):
    """``value`` as a path string if it is a non-empty str or PathLike, else an error."""
    if isinstance(value, bool) or not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"{what} must be a folder path (str), got {value!r}")
    if not os.fspath(value):
        raise ValueError(f"{what} must be a folder path, got an empty string")
    return os.fspath(value)


def input_shape(value, what):
    """``value`` (one sample's shape) as a list of positive ints, else an error naming ``what``."""
    if isinstance(value, np.ndarray) and value.ndim == 1:
        value = value.tolist()
    if not isinstance(value, (tuple, list)) or not value:
        raise TypeError(f"{what}: input_shape must be a non-empty tuple or list of positive integers "
                        f"like (1, 28, 28), got {value!r}")
    for i, s in enumerate(value):
        if isinstance(s, bool) or not isinstance(s, numbers.Integral) or s <= 0:
            raise ValueError(f"{what}: input_shape[{i}] must be a positive integer, got {s!r} "
                             f"(in input_shape={tuple(value)!r})")
    return [int(s) for s in value]


def optimizer_of(optimizer, model):
    """A ``ValueError`` when ``optimizer`` holds parameters but none of ``model``'s."""
    params = getattr(optimizer, "_parameter_list", None)
    if params and not isinstance(params[0], dict):  # dicts: parameter groups, not checked
        own = {id(p) for p in model.parameters()}
        if not any(id(p) in own for p in params):
            raise ValueError("Trainer: the optimizer holds none of the model's parameters (was it "
                             "built for another network?); build it with parameters=model.parameters()")


# ----------------------------------------------------------------------- data
def count_batches(data, batch_size, drop_last, what):
    """Batches per epoch of ``data`` (None for a DataLoader without a length); an error
    naming ``what`` when it is not data, or holds no sample or no batch."""
    if isinstance(data, paddle.io.DataLoader):
        try:
            steps = len(data)
        except (TypeError, ValueError, NotImplementedError):  # over an IterableDataset
            if next(iter(data), None) is None:
                raise ValueError(f"{what} is a DataLoader that yields no batches") from None
            return None
        if steps == 0:
            raise ValueError(f"{what} is a DataLoader that yields no batches (its length is 0)")
        return steps
    if not isinstance(data, paddle.io.Dataset):
        raise TypeError(f"{what} must be a paddle.io.Dataset or paddle.io.DataLoader, got "
                        f"{type(data).__name__}")
    if isinstance(data, paddle.io.IterableDataset):
        raise TypeError(f"{what} is an IterableDataset, which has no length; wrap it in a "
                        "paddle.io.DataLoader")
    try:
        n = len(data)
    except (TypeError, NotImplementedError):
        raise TypeError(f"{what} ({type(data).__name__}) has no __len__; a map-style "
                        "paddle.io.Dataset needs __len__ and __getitem__") from None
    if n == 0:
        raise ValueError(f"{what} is empty (0 samples)")
    steps = len(distributed.EpochBatchSampler(data, batch_size, drop_last=drop_last))
    if steps == 0:
        raise ValueError(f"{what} has {n} samples, fewer than batch_size={batch_size}: with "
                         "drop_last=True no batch is left (use a smaller batch_size or drop_last=False)")
    return steps


def label_rule(loss, metrics):
    """``(class axis, ignore_index)`` when ``loss`` or ``metrics`` read integer labels as class
    indices (CrossEntropyLoss without soft labels, NLLLoss, cross_entropy, Accuracy), else None."""
    if isinstance(loss, nn.CrossEntropyLoss):
        return None if loss.soft_label else (loss.axis, loss.ignore_index)
    if isinstance(loss, nn.NLLLoss):
        return 1, loss._ignore_index
    if loss is paddle.nn.functional.cross_entropy:
        return -1, -100
    if any(isinstance(m, paddle.metric.Accuracy) for m in metrics):
        return -1, None
    return None


def check_labels(outputs, labels, rule, where):
    """A ``ValueError`` naming the first label outside the classes of ``outputs`` (its width
    along ``rule``'s axis; ``rule`` is :func:`label_rule`'s). ``where`` may hold ``{sample}``."""
    out = outputs[0] if isinstance(outputs, (list, tuple)) else outputs
    if rule is None or not isinstance(out, (paddle.Tensor, np.ndarray)) or len(out.shape) < 2:
        return
    values = labels.numpy() if isinstance(labels, paddle.Tensor) else labels
    if not isinstance(values, np.ndarray) or values.ndim == 0 or values.size == 0 or \
            values.dtype.kind not in "iuf":
        return
    classes = int(out.shape[rule[0]])
    if values.min() >= 0 and values.max() < classes:
        return
    bad = (values < 0) | (values >= classes)
    if rule[1] is not None:
        bad &= values != rule[1]
    if not bad.any():
        return
    i = int(np.flatnonzero(bad)[0])
    value = values.flat[i]
    value = int(value) if float(value).is_integer() else float(value)
    sample = i // max(values.size // values.shape[0], 1)
    raise ValueError(f"{where.format(sample=sample)}: label {value} is outside the network's "
                     f"{classes} classes (its output width): labels must be 0..{classes - 1}")


def _first_layer(network):
    """``(name, layer)`` of the first Conv or Linear layer of ``network``, or None."""
    for name, layer in network.named_sublayers(include_self=True):
        if isinstance(layer, (nn.Conv1D, nn.Conv2D, nn.Conv3D, nn.Linear)):
            return name or type(layer).__name__, layer
    return None


def input_mismatch(network, inputs):
    """Why ``inputs`` cannot enter ``network``'s first Conv or Linear layer, or None."""
    found = _first_layer(network)
    if found is None or not isinstance(inputs, paddle.Tensor):
        return None
    name, layer = found
    shape, kind = list(inputs.shape), type(layer).__name__
    if isinstance(layer, nn.Linear):
        want = layer.weight.shape[0]
        if len(shape) == 2 and shape[-1] != want:
            return (f"the inputs have {shape[-1]} features (batch shape {shape}) but the network's "
                    f"first layer {name!r} ({kind}) takes {want}")
        return None
    dims = len(layer.weight.shape)  # Conv1D/2D/3D weights have the rank of their inputs
    if len(shape) != dims:
        return (f"the inputs have shape {shape} but the network's first layer {name!r} ({kind}) "
                f"takes {dims}-D inputs (batch first)")
    want = layer.weight.shape[1] * layer._groups
    got = shape[-1] if str(layer._data_format).endswith("C") else shape[1]
    if got != want:
        return (f"the inputs have {got} channels (batch shape {shape}) but the network's first "
                f"layer {name!r} ({kind}) expects {want}")
    return None


# ---------------------------------------------------------------------- state
def scalar(value):
    """``value`` as a float (hapi logs a loss as a one-element list), or None if not a number."""
    if isinstance(value, (list, tuple)) and len(value) == 1:
        value = value[0]
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def nonfinite_state(network):
    """The name of the first floating-point weight or buffer of ``network`` holding a NaN or
    an infinity, or None when all are finite."""
    for name, tensor in network.state_dict().items():
        if paddle.is_floating_point(tensor) and tensor.size and \
                not bool(paddle.isfinite(tensor).all().item()):
            return name
    return None
