"""Deployment targets: the widest weight grid each CPU family computes exactly in int8.

x86 CPUs without VNNI (AVX2, AVX-512 without VNNI) multiply unsigned 8-bit activations
by signed 8-bit weights with ``VPMADDUBSW``, which adds each pair of products in a
signed 16-bit lane and saturates there. With activations up to 255 and weights up to
127 a pair reaches 64,770 > 32,767, and onnxruntime and OpenVINO then return wrong
outputs. With weights on a 7-bit grid (``|q| <= 63``) a pair is at most
2 * 255 * 63 = 32,130: exact. VNNI (``VPDPBUSD``) and AMX accumulate in 32 bits, so full
8-bit weights are exact there; ARM's int8 dot products accumulate in 32 bits too.

``TARGETS`` maps a target name to the most weight bits it computes exactly; the weight
quantizers use that width unless ``weight_bits`` asks for fewer.
"""
from __future__ import annotations

TARGETS = {
    "x86": 7,  # every x86-64 CPU, with or without VNNI
    "x86_vnni": 8,  # AVX512-VNNI, AVX-VNNI or AMX only
    "arm": 8,  # ARMv8 int8 dot products (32-bit accumulation)
}
DEFAULT_TARGET = "x86"


def check_target(target):
    """Raise a ValueError unless ``target`` names a deployment target."""
    if target not in TARGETS:
        raise ValueError(f"target: {target!r} is not a deployment target; valid: {list(TARGETS)}")


def weight_bits_for(target, weight_bits=None):
    """The weight width to train and export with: ``weight_bits`` (default: the widest
    that ``target`` computes exactly); wider than that is a ValueError."""
    check_target(target)
    limit = TARGETS[target]
    if weight_bits is None:
        return limit
    if weight_bits > limit:
        raise ValueError(
            f"weight_bits: {weight_bits} is more than target {target!r} computes exactly "
            f"({limit} bits: x86 CPUs without VNNI add pairs of u8 x s8 products in int16, which "
            "saturates with 8-bit weights); use target 'x86_vnni' only for CPUs with VNNI or AMX")
    return weight_bits
