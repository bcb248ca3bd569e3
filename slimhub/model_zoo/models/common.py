"""Argument checks and channel scaling shared by the zoo architectures."""
from __future__ import annotations

import numbers


def check_positive_int(value, name, model):
    """Return ``value`` if it is a positive int, else raise naming ``model`` and ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{model}: {name} must be a positive integer, got {value!r}")
    return int(value)


def check_scale(scale, model):
    """Return ``scale`` as a float if it is a positive number, else raise."""
    if isinstance(scale, bool) or not isinstance(scale, numbers.Real) or not scale > 0:
        raise ValueError(f"{model}: scale must be a positive number, got {scale!r}")
    return float(scale)


def scaled(channels, scale, model):
    """``int(channels * scale)`` (Paddle's rounding), at least 1 channel."""
    width = int(channels * scale)
    if width < 1:
        raise ValueError(
            f"{model}: scale={scale} leaves a layer of {channels} channels with none; use a larger scale"
        )
    return width
