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

import numpy as np
import paddle
from paddle import nn

from slimhub import validate


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


def flops(model, input_shape, dtype="float32"):
    """Return ``{"flops": MACs per sample, "params": parameter count}``.

    ``input_shape`` is the shape of one sample, without the batch axis: ``(C, H, W)`` for
    an image network, ``(features,)`` for one that starts with a Linear layer. The count
    runs the network on a batch of one; a shape it cannot run on, such as a batch-first
    ``(1, 1, 28, 28)`` for an image network, is a one-line ``ValueError`` naming the shape.
    """
    if not isinstance(model, nn.Layer):
        raise TypeError(f"flops: model must be a paddle.nn.Layer, got {type(model).__name__}")
    shape = [1] + validate.input_shape(input_shape, "flops")
    try:
        zeros = paddle.zeros(shape, dtype=dtype)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"flops: dtype {dtype!r} is not a Paddle data type: {validate.first_line(exc)}") from None
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
        raise ValueError(f"flops: the network does not run on input_shape={tuple(input_shape)!r} (one "
                         f"sample without the batch axis, run as a batch of one: {shape}): "
                         f"{validate.first_line(exc)}") from None
    finally:
        for h in hooks:
            h.remove()
        if was_training:
            model.train()
    params = sum(_numel(p) for p in model.parameters())
    return {"flops": total[0], "params": params}
