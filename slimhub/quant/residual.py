"""Find the convolutions whose outputs feed a residual sum.

An int8 runtime runs a convolution in int8 from input to output (onnxruntime's
``QLinearConv``) only when its output is quantized. A conv whose output reaches the next
layer's input quantizer through ReLU / pooling gets that from the export (see
:mod:`slimhub.quant.onnx_qdq`); a conv whose output is added to another tensor (the
second conv of a ResNet block, its downsample conv) does not, unless the network
quantizes that output itself. :func:`residual_outputs` finds those convs by tracing one
forward pass: the layers returned are the conv, or the BatchNorm that is the only reader
of the conv's output (export folds it into the conv), whose output is an operand of an
``add`` of two computed tensors (not a bias or other parameter).
"""
from __future__ import annotations

import collections

import numpy as np
import paddle
from paddle import nn

from slimhub.modes import eval_mode
from slimhub.quant.fold_bn import BATCH_NORMS, foldable_bn


def _is_add(node):
    name = node.name()
    for suffix in ("Final", "GradNode"):
        name = name.removesuffix(suffix)
    return name.rstrip("_").lower() == "add"


def _outputs(out):
    if isinstance(out, paddle.Tensor):
        return [out]
    if isinstance(out, dict):
        out = list(out.values())
    return [t for o in out for t in _outputs(o)] if isinstance(out, (list, tuple)) else []


def _trace(network, inputs, convs):
    """Run ``network`` once in eval mode with autograd recorded; returns
    ``(outputs, {output node: conv name}, {output node: (bn name, input node)}, calls)``."""
    named = dict(network.named_sublayers())
    conv_out, bn_io, calls, hooks = {}, {}, collections.Counter(), []

    def on_conv(name):
        def hook(layer, args, output):
            calls[name] += 1
            conv_out[output.grad_fn.node_ptr()] = name
        return hook

    def on_bn(name):
        def hook(layer, args, output):
            calls[name] += 1
            if args[0].grad_fn is not None:
                bn_io[output.grad_fn.node_ptr()] = (name, args[0].grad_fn.node_ptr())
        return hook

    for name in convs:
        hooks.append(named[name].register_forward_post_hook(on_conv(name)))
    for name, layer in named.items():
        if isinstance(layer, BATCH_NORMS) and foldable_bn(layer):
            hooks.append(layer.register_forward_post_hook(on_bn(name)))
    x = paddle.to_tensor(np.asarray(inputs, "float32")) if not isinstance(inputs, paddle.Tensor) else inputs
    x = x.detach()
    x.stop_gradient = False  # every computed tensor gets an autograd node, frozen weights or not
    try:
        with eval_mode(network), paddle.enable_grad():  # no BatchNorm statistics or learned scales change
            outputs = _outputs(network(x))
    finally:
        for h in hooks:
            h.remove()
    return outputs, conv_out, bn_io, calls


def residual_outputs(network, inputs, convs):
    """Names of the layers (of the Conv2D layers named in ``convs``, or the BatchNorms that
    alone read their outputs) whose outputs are operands of a residual ``add`` in
    ``network(inputs)``; layers that run more than once are left out."""
    wanted = set(convs)
    convs = [name for name, layer in network.named_sublayers()
             if name in wanted and isinstance(layer, nn.Conv2D) and layer._data_format == "NCHW"]
    outputs, conv_out, bn_io, calls = _trace(network, inputs, convs)
    parameters = {p.grad_fn.node_ptr() for p in network.parameters() if p.grad_fn is not None}
    reads, summed = collections.Counter(), set()
    stack, seen = [t.grad_fn for t in outputs if t.grad_fn is not None], set()
    while stack:
        node = stack.pop()
        if node.node_ptr() in seen:
            continue
        seen.add(node.node_ptr())
        operands = [p for p in node.next_functions if p is not None]
        reads.update(p.node_ptr() for p in operands)
        data = [p.node_ptr() for p in operands if p.node_ptr() not in parameters]
        if _is_add(node) and len(data) == 2:
            summed.update(data)
        stack.extend(operands)
    found = set()
    for ptr in summed:
        if ptr in conv_out and calls[conv_out[ptr]] == 1:
            found.add(conv_out[ptr])
        elif ptr in bn_io:
            bn, source = bn_io[ptr]
            conv = conv_out.get(source)
            if conv is not None and reads[source] == 1 and calls[conv] == 1 and calls[bn] == 1:
                found.add(bn)
    return sorted(found)
