"""Count multiply-accumulates (MACs) and parameters of a dygraph model.

One forward pass of a zero input with forward post-hooks on the layers that do
arithmetic. Per sample:

- Conv2D: output elements x (in_channels / groups) x kernel area
- Conv2DTranspose: input elements x (out_channels / groups) x kernel area
- Linear: output elements x in_features
- BatchNorm: one MAC per output element (scale and shift)
- MaxPool2D / AvgPool2D: output elements x kernel area
- AdaptiveAvgPool2D / AdaptiveMaxPool2D: one per input element
Activations, additions and reshapes count zero.
"""
from __future__ import annotations

import numbers

import numpy as np
import paddle
from paddle import nn


def _numel(t):
    return int(np.prod(t.shape))


# from the weight's shape, not the layer's attributes: those may be stale after another
# tool reshaped the weights
def _conv(layer, x, y):  # weight: [out, in / groups, kh, kw]
    return _numel(y) * int(np.prod(layer.weight.shape[1:]))


def _conv_transpose(layer, x, y):  # weight: [in, out / groups, kh, kw]
    return _numel(x) * int(np.prod(layer.weight.shape[1:]))


def _linear(layer, x, y):
    return _numel(y) * layer.weight.shape[0]


def _per_output(layer, x, y):
    return _numel(y)


def _pool(layer, x, y):
    k = layer.ksize
    area = k * k if isinstance(k, int) else int(np.prod(k))
    return _numel(y) * area


def _per_input(layer, x, y):
    return _numel(x)


_COUNTERS = [
    ((nn.Conv2D,), _conv),
    ((nn.Conv2DTranspose,), _conv_transpose),
    ((nn.Linear,), _linear),
    ((nn.BatchNorm2D, nn.BatchNorm1D, nn.BatchNorm, nn.SyncBatchNorm), _per_output),
    ((nn.MaxPool2D, nn.AvgPool2D), _pool),
    ((nn.AdaptiveAvgPool2D, nn.AdaptiveMaxPool2D), _per_input),
]


def _counter_for(layer):
    for types, fn in _COUNTERS:
        if isinstance(layer, types):
            return fn
    return None


def check_input_shape(input_shape, where, dims=None):
    """``input_shape`` as a list of positive ints, or a one-line error naming ``where`` and the
    bad value. ``dims`` (optional) is the number of sizes it must have."""
    if isinstance(input_shape, np.ndarray) and input_shape.ndim == 1:
        input_shape = input_shape.tolist()
    if not isinstance(input_shape, (tuple, list)):
        raise TypeError(f"{where}: input_shape must be a tuple or list of positive integers like "
                        f"(1, 28, 28), got {input_shape!r} (a {type(input_shape).__name__})")
    for i, s in enumerate(input_shape):
        if isinstance(s, bool) or not isinstance(s, numbers.Integral) or s <= 0:
            raise ValueError(f"{where}: input_shape[{i}] must be a positive integer, got {s!r} "
                             f"(in input_shape={tuple(input_shape)!r})")
    if dims is not None and len(input_shape) != dims:
        raise ValueError(f"{where}: input_shape must have {dims} sizes, got {len(input_shape)}: "
                         f"{tuple(input_shape)!r}")
    return [int(s) for s in input_shape]


def _first_line(exc):
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return (lines[0] if lines else type(exc).__name__)[:300]


def flops(model, input_shape, dtype="float32"):
    """Return ``{"flops": MACs per sample, "params": parameter count}``.

    ``input_shape`` is a tuple or list of positive integers. Three sizes are one sample
    ``(C, H, W)`` (a batch of 1 is added); any other number of sizes starts with the batch
    size: ``(N, C, H, W)``, ``(N, features)``. MACs are always counted per sample, so
    ``(1, 28, 28)``, ``(1, 1, 28, 28)`` and ``(8, 1, 28, 28)`` give the same count.
    A shape the network cannot run on is a ``ValueError`` naming the shape.
    """
    if not isinstance(model, nn.Layer):
        raise TypeError(f"flops: model must be a paddle.nn.Layer, got {type(model).__name__}")
    shape = check_input_shape(input_shape, "flops")
    if len(shape) < 2:
        raise ValueError(f"flops: input_shape {tuple(input_shape)!r} has {len(shape)} size; give one "
                         "image as (C, H, W) or a batch-first shape such as (1, features)")
    if len(shape) == 3:
        shape = [1] + shape
    try:
        zeros = paddle.zeros(shape, dtype=dtype)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"flops: dtype {dtype!r} is not a Paddle data type: {_first_line(exc)}") from None
    batch = shape[0]
    total = [0]
    hooks = []

    def make_hook(fn):
        def hook(layer, inputs, output):
            total[0] += fn(layer, inputs[0], output)
        return hook

    for layer in model.sublayers(include_self=True):
        fn = _counter_for(layer)
        if fn is not None:
            hooks.append(layer.register_forward_post_hook(make_hook(fn)))
    was_training = model.training
    model.eval()
    try:
        with paddle.no_grad():
            model(zeros)
    except Exception as exc:  # noqa: BLE001  (the shape is the only thing flops chose)
        read = "(C, H, W) with a batch of 1" if len(input_shape) == 3 else "batch first"
        raise ValueError(f"flops: the network does not run on an input of shape {shape} "
                         f"(input_shape={tuple(input_shape)!r}, read as {read}): {_first_line(exc)}") from exc
    finally:
        for h in hooks:
            h.remove()
        if was_training:
            model.train()
    params = sum(_numel(p) for p in model.parameters())
    return {"flops": total[0] // batch, "params": params}
