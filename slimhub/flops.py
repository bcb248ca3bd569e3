"""Count multiply-accumulates (MACs) and parameters of a dygraph model.

One forward pass of a zero input with forward post-hooks on the layers of the layer
table (:mod:`slimhub.prune.layers`), each counted as its entry says, the same entries
pruning computes its MACs with. Per sample:

- Conv2D: output elements x (in_channels / groups) x kernel area
- Conv2DTranspose: input elements x (out_channels / groups) x kernel area
- Linear: output elements x in_features
- BatchNorm: one MAC per output element (scale and shift)
- MaxPool2D / AvgPool2D: output elements x kernel area
- AdaptiveAvgPool2D / AdaptiveMaxPool2D: one per input element
Activations, additions, reshapes and layers not in the table count zero.
"""
from __future__ import annotations

import numpy as np
import paddle
from paddle import nn

from slimhub import validate
from slimhub.modes import eval_mode
from slimhub.prune.layers import recording_calls


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

    def count(name, layer, entry, x, y):
        total[0] += entry.macs(layer, x, y).total

    try:
        with eval_mode(model), recording_calls(model, count), paddle.no_grad():
            model(zeros)
    except Exception as exc:  # noqa: BLE001  (the shape is the only thing flops chose)
        raise ValueError(f"flops: the network does not run on input_shape={tuple(input_shape)!r} (one "
                         f"sample without the batch axis, run as a batch of one: {shape}): "
                         f"{validate.first_line(exc)}") from None
    params = sum(int(np.prod(p.shape)) for p in model.parameters())
    return {"flops": total[0], "params": params}
