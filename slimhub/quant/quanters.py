"""Fake quantizers: quantize-dequantize with a straight-through gradient.

For ``b`` bits and a scale ``s`` (one per tensor or one per channel), with
``qmax = 2^(b-1) - 1``::

    q     = clip(round(x / s), low, high)
    x_hat = q * s

Weights use the symmetric codes ``-qmax..qmax``. Static activation scales use every code
of a ``b``-bit integer, so that an int8 / uint8 QuantizeLinear saturates exactly where they
clip: ``-(qmax + 1)..qmax`` (the scale maps ``max|x|`` to ``qmax``; ``-(qmax + 1)`` only
catches values below the range), or unsigned ``0..2^b - 1`` for inputs that are never
negative (after a ReLU), twice the resolution. ``round`` rounds half to even (as numpy
and ONNX QuantizeLinear do). The gradient of ``x_hat`` with respect to ``x`` is 1 where
``low * s <= x <= high * s`` and 0 outside (straight-through estimator); no gradient
flows into the scale.

Quanters (``QUANTERS``, by name):

- ``abs_max``: ``s = max|x| / qmax`` of the tensor being quantized (weights: fixed
  by the weights; activations: dynamic, from the current batch, also at inference).
- ``moving_average_abs_max``: activations; in training ``s`` follows an exponential
  moving average of ``max|x| / qmax`` over batches (the first batch sets it); in
  eval and export it is frozen. The first batch also chooses the grid, once: unsigned
  (``s`` from ``max x / (2^b - 1)``) when none of its values is negative, else signed.
- ``channel_wise_abs_max``: weights; one ``s`` per output channel.
"""
from __future__ import annotations

import paddle
from paddle import nn

EPS = 1e-12  # smallest abs max used for a scale, so that an all-zero tensor has one


def qmax(bits, unsigned=False):
    """Largest code of a ``bits``-bit integer: ``2^(bits-1) - 1``, or ``2^bits - 1`` unsigned."""
    if not isinstance(bits, int) or isinstance(bits, bool) or not 2 <= bits <= 16:
        raise ValueError(f"bits must be an integer in [2, 16], got {bits!r}")
    return 2 ** bits - 1 if unsigned else 2 ** (bits - 1) - 1


def qmin(bits, unsigned=False):
    """Smallest code of a ``bits``-bit integer: ``-2^(bits-1)``, or 0 unsigned."""
    return 0 if unsigned else -qmax(bits) - 1


def scale_from_absmax(absmax, bits):
    """The quantization step for a tensor whose largest magnitude is ``absmax``."""
    return paddle.clip(absmax, min=EPS) / qmax(bits)


def fake_quant(x, scale, bits, unsigned=False):
    """Quantize-dequantize ``x`` with ``scale`` (a 1-element tensor or one broadcastable
    to ``x``) on the activation grid, codes ``qmin..qmax`` of a ``bits``-bit integer (signed
    or unsigned); straight-through gradient inside the grid's range, 0 outside."""
    scale = scale.detach()
    return round_to_grid(clip_to(x, scale * qmin(bits, unsigned), scale * qmax(bits, unsigned)), scale)


def clip_to(x, low, high):
    """``x`` clipped to ``[low, high]`` (tensors of one element, or broadcastable to ``x``)."""
    if low.size == 1:
        return paddle.clip(x, low, high)
    return paddle.minimum(paddle.maximum(x, low), high)


def round_to_grid(x, scale):
    """``round(x / scale) * scale`` with gradient 1, for ``x`` already within range (the
    abs-max quanters' scales cover their tensor)."""
    if x.stop_gradient or not paddle.is_grad_enabled():
        return _grid(x, scale)
    return _StraightThrough.apply(x, scale)


def _grid(x, scale):
    # in place on one temporary: fake quantization runs on every weight and activation
    # at every training step
    with paddle.no_grad():
        grid = x / scale
        grid.round_()
        grid.multiply_(scale)
    return grid


class _StraightThrough(paddle.autograd.PyLayer):
    """Forward: round to the grid; backward: the gradient passes unchanged."""

    @staticmethod
    def forward(ctx, x, scale):
        return _grid(x, scale)

    @staticmethod
    def backward(ctx, grad):
        return grad


def absmax(x, axis=None):
    """``max |x|`` over ``axis`` (all axes when None, else kept as size 1), without
    materializing ``|x|``."""
    with paddle.no_grad():
        if axis is None:
            return paddle.maximum(x.max(), -x.min())
        return paddle.maximum(x.amax(axis=axis, keepdim=True), -x.amin(axis=axis, keepdim=True))


def _reduce_axes(x, axis):
    return [a for a in range(x.ndim) if a != axis]


class AbsMaxQuanter(nn.Layer):
    """Per-tensor scale from the tensor itself: ``s = max|x| / qmax``."""

    dynamic = True  # as an activation quanter, the scale depends on each input

    def __init__(self, bits=8):
        super().__init__()
        self.bits = bits
        qmax(bits)

    def get_scale(self, x):
        """The scale this quanter uses for ``x`` (a 1-element tensor)."""
        return scale_from_absmax(absmax(x), self.bits)

    def forward(self, x):
        return round_to_grid(x, self.get_scale(x))

    def extra_repr(self):
        return f"bits={self.bits}"


class ChannelWiseAbsMaxQuanter(nn.Layer):
    """One scale per channel along ``axis`` (0: Conv2D weights, 1: Linear weights)."""

    dynamic = False

    def __init__(self, bits=8, axis=0):
        super().__init__()
        self.bits = bits
        self.axis = axis
        qmax(bits)

    def get_scale(self, x):
        """Scales shaped to broadcast against ``x`` (size 1 on every axis but ``axis``)."""
        return scale_from_absmax(absmax(x, _reduce_axes(x, self.axis)), self.bits)

    def forward(self, x):
        return round_to_grid(x, self.get_scale(x))

    def extra_repr(self):
        return f"bits={self.bits}, axis={self.axis}"


class MovingAverageAbsMaxQuanter(nn.Layer):
    """A static per-tensor scale: in training ``s <- rate * s + (1 - rate) * max|x| / qmax``
    (the first batch sets ``s``), then ``x`` is quantized with the updated ``s``; in
    eval ``s`` is frozen. ``s`` is the buffer ``scale``: 0 until the first update, and
    while it is 0, eval passes ``x`` through unquantized (export refuses it).

    The grid has every code of a ``bits``-bit integer (module docstring). The buffer
    ``unsigned`` is set by the first update and never changes after: True when that batch
    had no negative value; the codes are then ``0..2^bits - 1`` and ``max|x|`` is ``max x``."""

    dynamic = False

    def __init__(self, bits=8, moving_rate=0.9):
        super().__init__()
        if not isinstance(moving_rate, (int, float)) or not 0 <= moving_rate < 1:
            raise ValueError(f"moving_rate must be in [0, 1), got {moving_rate!r}")
        self.bits = bits
        self.moving_rate = float(moving_rate)
        qmax(bits)
        self.register_buffer("scale", paddle.zeros([], dtype="float32"))
        self.register_buffer("unsigned", paddle.zeros([], dtype="bool"))

    def get_scale(self, x=None):
        """The frozen scale (a 0-d tensor); an unset scale is an error."""
        if not self.has_scale():
            raise RuntimeError(
                f"{self.full_name()}: moving_average_abs_max has no scale yet; train the "
                "network for at least one step or calibrate it (slimhub.quant.calibrate) first")
        return self.scale

    def has_scale(self):
        return self.scale.item() > 0

    def is_unsigned(self):
        return bool(self.unsigned.item())

    def forward(self, x):
        if not self.training:
            if not self.has_scale():  # never trained nor calibrated: nothing to quantize with yet
                return x
            return fake_quant(x, self.scale, self.bits, self.is_unsigned())
        with paddle.no_grad():  # tensor operations only: no device synchronization per step
            largest, smallest = x.max(), x.min()
            first = self.scale <= 0
            paddle.assign(paddle.where(first, smallest >= 0, self.unsigned), self.unsigned)
            top = paddle.where(self.unsigned, paddle.full([], qmax(self.bits, True), "float32"),
                               paddle.full([], qmax(self.bits), "float32"))
            magnitude = paddle.where(self.unsigned, largest, paddle.maximum(largest, -smallest))
            current = paddle.clip(magnitude, min=EPS) / top
            r = self.moving_rate
            paddle.assign(paddle.where(first, current, r * self.scale + (1 - r) * current), self.scale)
            high = self.scale * top
            low = paddle.where(self.unsigned, paddle.zeros_like(high), self.scale * qmin(self.bits))
        return round_to_grid(clip_to(x, low, high), self.scale)

    def extra_repr(self):
        return f"bits={self.bits}, moving_rate={self.moving_rate}"


QUANTERS = {
    "abs_max": AbsMaxQuanter,
    "moving_average_abs_max": MovingAverageAbsMaxQuanter,
    "channel_wise_abs_max": ChannelWiseAbsMaxQuanter,
}
WEIGHT_QUANTERS = ("abs_max", "channel_wise_abs_max")
ACTIVATION_QUANTERS = ("abs_max", "moving_average_abs_max")


def check_quanter_name(name, role):
    """Raise a ValueError unless ``name`` is a quanter valid for ``role`` ("weight"/"activation")."""
    valid = WEIGHT_QUANTERS if role == "weight" else ACTIVATION_QUANTERS
    if name not in valid:
        known = "" if name in QUANTERS else f"; all quanters: {sorted(QUANTERS)}"
        raise ValueError(
            f"{role}_quantize_type: {name!r} is not a valid {role} quanter; "
            f"valid: {list(valid)}{known}")


def make_quanter(name, role, bits=8, channel_axis=0, moving_rate=0.9):
    """Build the quanter called ``name`` for a ``role`` ("weight" or "activation")."""
    check_quanter_name(name, role)
    if name == "channel_wise_abs_max":
        return ChannelWiseAbsMaxQuanter(bits, axis=channel_axis)
    if name == "moving_average_abs_max":
        return MovingAverageAbsMaxQuanter(bits, moving_rate=moving_rate)
    return QUANTERS[name](bits)
