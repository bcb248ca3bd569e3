"""Fold BatchNorm layers into the convolutions that feed them (for deployment).

In eval mode a BatchNorm computes ``y * m + t`` per channel with
``m = gamma / sqrt(var + eps)`` and ``t = beta - mean * m``; when ``y = conv(x)``
feeds nothing but that BatchNorm, the pair equals one convolution with weight
``W * m`` (per output channel) and bias ``b * m + t``.

Pairs are found by running the network once (eval mode) on an example input and
matching each BatchNorm's input to the conv output it is; every candidate pair is
then checked numerically (folded against unfolded, in float32), so a conv output
that also feeds something else is never folded.
"""
from __future__ import annotations

import copy

import numpy as np
import paddle
from paddle import nn

from slimhub.quant.wrap import quantized_layers, replace_layer, strip_quant

BATCH_NORMS = (nn.BatchNorm2D, nn.SyncBatchNorm, nn.BatchNorm)
_RTOL = 1e-3  # folding is exact up to float32 rounding (~1e-6 relative)


def example_inputs(input_spec, batch=2, seed=0):
    """Random float inputs shaped like ``input_spec`` (None / -1 sizes become ``batch``)."""
    if not input_spec or not all(isinstance(s, paddle.static.InputSpec) for s in input_spec):
        raise TypeError("input_spec must be a non-empty list of paddle.static.InputSpec, "
                        f"got {input_spec!r}")
    rng = np.random.default_rng(seed)
    inputs = []
    for spec in input_spec:
        shape = [batch if s is None or s < 0 else int(s) for s in spec.shape]
        inputs.append(paddle.to_tensor(rng.standard_normal(shape).astype("float32"), dtype=spec.dtype))
    return inputs


def bn_affine(bn):
    """``(m, t)`` float64 arrays with ``bn(y) == y * m + t`` per channel in eval mode."""
    var = bn._variance.numpy().astype("float64")
    mean = bn._mean.numpy().astype("float64")
    gamma = bn.weight.numpy().astype("float64") if bn.weight is not None else np.ones_like(mean)
    beta = bn.bias.numpy().astype("float64") if bn.bias is not None else np.zeros_like(mean)
    m = gamma / np.sqrt(var + bn._epsilon)
    return m, beta - mean * m


def foldable_bn(bn):
    """Whether ``bn`` can be folded into a conv: channels first, no fused activation."""
    layout = getattr(bn, "_data_format", getattr(bn, "_data_layout", "NCHW"))
    return layout == "NCHW" and getattr(bn, "_act", None) is None


def _candidate_pairs(network, inputs):
    """``[(conv_name, bn_name)]`` where the BatchNorm's input is the conv's output tensor."""
    named = dict(network.named_sublayers())
    produced, pairs, hooks = {}, [], []

    def record_output(name):
        def hook(layer, args, output):
            produced[id(output)] = (name, output)  # keep output alive so its id stays unique
        return hook

    def match_input(name):
        def hook(layer, args):
            if args and id(args[0]) in produced and produced[id(args[0])][1] is args[0]:
                pairs.append((produced[id(args[0])][0], name))
        return hook

    for name, layer in named.items():
        if isinstance(layer, nn.Conv2D) and layer._data_format == "NCHW":
            hooks.append(layer.register_forward_post_hook(record_output(name)))
        elif isinstance(layer, BATCH_NORMS) and foldable_bn(layer):
            hooks.append(layer.register_forward_pre_hook(match_input(name)))
    try:
        with paddle.no_grad():
            network(*inputs)
    finally:
        for h in hooks:
            h.remove()
    # a conv or BatchNorm that ran more than once (shared) is not folded
    conv_count = {c: sum(1 for p in pairs if p[0] == c) for c, _ in pairs}
    bn_count = {b: sum(1 for p in pairs if p[1] == b) for _, b in pairs}
    return list(dict.fromkeys(p for p in pairs if conv_count[p[0]] == 1 and bn_count[p[1]] == 1))


def _fold_plain(network, pairs):
    """Fold ``pairs`` into the plain Conv2D layers of ``network`` in place."""
    named = dict(network.named_sublayers())
    for conv_name, bn_name in pairs:
        conv, bn = named[conv_name], named[bn_name]
        m, t = bn_affine(bn)
        weight = conv.weight.numpy().astype("float64") * m.reshape(-1, 1, 1, 1)
        bias = conv.bias.numpy().astype("float64") if conv.bias is not None else np.zeros_like(m)
        new_weight = conv.create_parameter(list(weight.shape), dtype="float32")
        new_weight.set_value(weight.astype("float32"))
        new_bias = conv.create_parameter([len(m)], dtype="float32", is_bias=True)
        new_bias.set_value((bias * m + t).astype("float32"))
        conv.weight, conv.bias = new_weight, new_bias
        replace_layer(network, bn_name, nn.Identity())


def _close(a, b):
    return all(np.abs(x - y).max() <= _RTOL * (np.abs(y).max() + 1e-12) for x, y in zip(a, b))


def _outputs(network, inputs):
    with paddle.no_grad():
        out = network(*inputs)
    return [o.numpy() for o in (out if isinstance(out, (list, tuple)) else [out])]


def folded_copy(network, input_spec):
    """``(float copy of network in eval mode with its foldable BatchNorms folded,
    [(conv_name, bn_name)] folded)``; fake-quantized layers become plain float layers."""
    inputs = example_inputs(input_spec)
    twin = strip_quant(copy.deepcopy(network))
    twin.eval()
    reference = _outputs(twin, inputs)
    candidates = _candidate_pairs(twin, inputs)

    def trial(pairs):
        folded = copy.deepcopy(twin)
        _fold_plain(folded, pairs)
        return folded if _close(_outputs(folded, inputs), reference) else None

    folded = trial(candidates)
    if folded is not None:
        return folded, candidates
    safe = [pair for pair in candidates if trial([pair]) is not None]
    _fold_plain(twin, safe)
    return twin, safe


def conv_bn_pairs(network, input_spec):
    """``[(conv_name, bn_name)]`` of the BatchNorms that can be folded into their conv.

    Fake-quantized convs count as convs (the check runs on a float copy).
    """
    return folded_copy(network, input_spec)[1]


def fold_bn(network, input_spec):
    """A copy of the float ``network`` (eval mode) with every foldable BatchNorm folded
    into the Conv2D before it and replaced by ``nn.Identity``.

    ``input_spec`` is a list of ``paddle.static.InputSpec`` describing the inputs.
    Fake-quantized networks are folded by :func:`slimhub.quant.export` instead, which
    keeps their learned int8 weights.
    """
    if not isinstance(network, nn.Layer):
        raise TypeError(f"fold_bn: network must be a paddle.nn.Layer, got {type(network).__name__}")
    if quantized_layers(network):
        raise TypeError("fold_bn: the network is fake-quantized; export it with "
                        "slimhub.quant.export, which folds BatchNorm into the int8 weights")
    return folded_copy(network, input_spec)[0]
