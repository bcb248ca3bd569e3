"""Wrap Conv2D and Linear layers so that their weights and inputs are fake-quantized.

A wrapped layer keeps the original ``weight`` and ``bias`` Parameter objects under
the same names (so optimizer state and checkpoint keys of the weights are unchanged),
stays an instance of ``nn.Conv2D`` / ``nn.Linear`` (FLOPs counting and pruning see
it as before) and adds two sublayers, ``weight_quanter`` and ``activation_quanter``.

A layer whose output feeds a residual sum (a conv, or the BatchNorm after it; see
:mod:`slimhub.quant.residual`) can get a third quanter, ``output_quanter``, applied to its
output by a forward post-hook, so that int8 runtimes can run that conv in int8 too.
"""
from __future__ import annotations

import fnmatch
from dataclasses import asdict, dataclass, field

import paddle
from paddle import nn
from paddle.nn import functional as F

from slimhub.quant.quanters import (ACTIVATION_QUANTERS, QUANTERS, WEIGHT_QUANTERS, MovingAverageAbsMaxQuanter,
                                    make_quanter)
from slimhub.quant.targets import DEFAULT_TARGET, TARGETS, weight_bits_for
from slimhub.rules import NAMES, choice, integer, nullable, number

QUANT_RULES = {
    "weight_quantize_type": choice(WEIGHT_QUANTERS), "activation_quantize_type": choice(ACTIVATION_QUANTERS),
    "target": choice(TARGETS), "weight_bits": nullable(integer(2, 16)), "activation_bits": integer(2, 16),
    "moving_rate": number(0, 1, open_hi=True), "skip": NAMES,
}
"""The rule of each :class:`QuantConfig` field (the QAT recipe section reads the same)."""


@dataclass(frozen=True)
class QuantConfig:
    """What to quantize and how; validated on creation.

    ``target`` names the CPUs the int8 model will run on (see
    :mod:`slimhub.quant.targets`); ``weight_bits`` defaults to the widest weight grid that
    target computes exactly (7 bits for ``"x86"``, 8 for ``"x86_vnni"`` and ``"arm"``) and
    may be set lower, never higher. Activations use ``activation_bits`` (8)."""

    weight_quantize_type: str = "channel_wise_abs_max"
    activation_quantize_type: str = "moving_average_abs_max"
    target: str = DEFAULT_TARGET
    weight_bits: int | None = None
    activation_bits: int = 8
    moving_rate: float = 0.9
    skip: tuple = field(default_factory=tuple)

    def __post_init__(self):
        skip = list(self.skip) if isinstance(self.skip, tuple) else self.skip  # the rule reads recipe lists
        for key, rule in QUANT_RULES.items():
            rule.require(skip if key == "skip" else getattr(self, key), None, key)
        object.__setattr__(self, "weight_bits", weight_bits_for(self.target, self.weight_bits))
        object.__setattr__(self, "skip", (skip,) if isinstance(skip, str) else tuple(skip))

    def to_dict(self):
        return {**asdict(self), "skip": list(self.skip)}


def _transplant(new, old):
    """Give the fresh layer ``new`` the state of ``old``: attributes, weight and bias,
    forward hooks and train/eval mode."""
    nn.Layer.__init__(new)
    base = set(vars(nn.Layer()))
    for key, value in vars(old).items():
        if key not in base or key.startswith("_forward_"):
            new.__dict__[key] = value
    new.weight = old.weight
    new.bias = old.bias
    new.training = old.training


class QuantedConv2D(nn.Conv2D):
    """A Conv2D whose input and weight pass through quanters (build it with :func:`wrap_layer`)."""

    def forward(self, x):
        x = self.activation_quanter(x)
        weight = self.weight_quanter(self.weight)
        padding = self._padding
        if self._padding_mode != "zeros":
            x = F.pad(x, self._reversed_padding_repeated_twice, mode=self._padding_mode,
                      data_format=self._data_format)
            padding = 0
        return F.conv2d(x, weight, self.bias, stride=self._stride, padding=padding,
                        dilation=self._dilation, groups=self._groups, data_format=self._data_format)


class QuantedLinear(nn.Linear):
    """A Linear whose input and weight pass through quanters (build it with :func:`wrap_layer`)."""

    def forward(self, x):
        return F.linear(self.activation_quanter(x), self.weight_quanter(self.weight), self.bias,
                        name=self.name)


WRAPPERS = {nn.Conv2D: QuantedConv2D, nn.Linear: QuantedLinear}
QUANTED_TYPES = tuple(WRAPPERS.values())
CHANNEL_AXIS = {nn.Conv2D: 0, nn.Linear: 1}  # output channels of the weight ([out, in, kh, kw] / [in, out])


def wrap_layer(layer, weight_quanter, activation_quanter):
    """The quantized version of the plain Conv2D / Linear ``layer``: same parameters,
    attributes, hooks and mode; ``weight_quanter(weight)`` and ``activation_quanter(input)``
    run before the layer's operation."""
    cls = WRAPPERS[type(layer)]
    new = cls.__new__(cls)
    _transplant(new, layer)
    new.weight_quanter = weight_quanter
    new.activation_quanter = activation_quanter
    if not layer.training:
        new.eval()
    return new


def quantized_layers(network):
    """``{name: layer}`` of the fake-quantized layers of ``network``."""
    return {name: layer for name, layer in network.named_sublayers()
            if isinstance(layer, QUANTED_TYPES)}


def quantizable_layers(network):
    """``{name: layer}`` of the plain Conv2D / Linear layers that :func:`quantize` wraps."""
    return {name: layer for name, layer in network.named_sublayers() if type(layer) in WRAPPERS}


def _quantize_output(layer, inputs, output):
    """Forward post-hook: the layer's output through its ``output_quanter``."""
    return layer.output_quanter(output)


def add_output_quanter(layer, quanter):
    """Pass ``layer``'s outputs through ``quanter``, kept as ``layer.output_quanter``."""
    layer.output_quanter = quanter
    layer.register_forward_post_hook(_quantize_output)


def output_quantized_layers(network):
    """``{name: layer}`` of the layers of ``network`` whose outputs are fake-quantized."""
    return {name: layer for name, layer in network.named_sublayers()
            if "output_quanter" in layer._sub_layers}


def add_output_quanters(network, names, config):
    """Give the layers called ``names`` (those without one) a static 8-bit output quanter
    (what int8 kernels write) with ``config``'s moving rate."""
    named = dict(network.named_sublayers())
    unknown = sorted(set(names) - set(named))
    if unknown:
        raise ValueError(f"output quanters: the network has no layers {unknown[:5]}")
    for name in names:
        if "output_quanter" not in named[name]._sub_layers:
            add_output_quanter(named[name], MovingAverageAbsMaxQuanter(8, config.moving_rate))


def output_quanter_layers(state):
    """Names of the layers that have output quanters in the state dict ``state``."""
    suffix = ".output_quanter.scale"
    return sorted(k[:-len(suffix)] for k in state if k.endswith(suffix))


def quantize_residual_outputs(network, inputs, config):
    """Give the quantized convs of ``network`` whose outputs feed a residual sum in
    ``network(inputs)`` static output quanters (on the BatchNorm after the conv where
    there is one); returns the names of those layers. With dynamic (``abs_max``) activation
    scales there are none: int8 kernels need static output scales."""
    if QUANTERS[config.activation_quantize_type].dynamic:
        return []
    from slimhub.quant.residual import residual_outputs  # residual -> fold_bn -> this module

    convs = [name for name, layer in quantized_layers(network).items() if isinstance(layer, QuantedConv2D)]
    names = residual_outputs(network, inputs, convs)
    add_output_quanters(network, names, config)
    return names


def fill_in_grids(network, state):
    """Add ``unsigned = False`` to ``state`` (a state dict for ``network``) for each activation
    quanter it lacks: state saved before activation grids could be unsigned holds only
    signed ones. Returns ``state``."""
    for key in network.state_dict():
        if key.endswith("_quanter.unsigned") and key not in state:
            state[key] = paddle.zeros([], dtype="bool")
    return state


def strip_quant(network):
    """Replace every fake-quantized layer of ``network`` by the plain Conv2D / Linear
    holding the same (unquantized) weights, and remove output quanters, in place;
    returns ``network``."""
    for layer in output_quantized_layers(network).values():
        del layer.output_quanter
        for key in [k for k, hook in layer._forward_post_hooks.items() if hook is _quantize_output]:
            del layer._forward_post_hooks[key]
    for name, layer in quantized_layers(network).items():
        plain_type = nn.Conv2D if isinstance(layer, QuantedConv2D) else nn.Linear
        plain = plain_type.__new__(plain_type)
        _transplant(plain, layer)
        replace_layer(network, name, plain)
    return network


def replace_layer(network, name, new):
    """Put ``new`` in place of the sublayer called ``name`` (as in ``named_sublayers``)."""
    parent = network
    *path, leaf = name.split(".")
    for part in path:
        parent = parent._sub_layers[part]
    parent._sub_layers[leaf] = new


def quantize(network, config=None, inputs=None, **options):
    """Fake-quantize every Conv2D and Linear of ``network`` in place and return it.

    ``config`` is a :class:`QuantConfig`, or pass its fields as keyword arguments
    (``weight_quantize_type``, ``activation_quantize_type``, ``target``, ``weight_bits``,
    ``activation_bits``, ``moving_rate``, ``skip``). ``skip`` holds glob patterns of
    layer names (as in ``named_sublayers``, e.g. ``"conv1"``, ``"fc*"``) left in float;
    a pattern that matches no layer is an error. Layers already quantized are left alone.
    With ``inputs`` (a batch of network inputs), the convs whose outputs feed a residual
    sum also get output quanters (:func:`quantize_residual_outputs`).
    """
    if not isinstance(network, nn.Layer):
        raise TypeError(f"quantize: network must be a paddle.nn.Layer, got {type(network).__name__}")
    if config is None:
        config = QuantConfig(**options)
    elif options:
        raise TypeError("quantize: pass either config or keyword options, not both")
    if not isinstance(config, QuantConfig):
        raise TypeError(f"quantize: config must be a QuantConfig, got {type(config).__name__}")
    for name, layer in layers_to_quantize(network, config).items():
        weight_quanter = make_quanter(config.weight_quantize_type, "weight", config.weight_bits,
                                      channel_axis=CHANNEL_AXIS[type(layer)])
        activation_quanter = make_quanter(config.activation_quantize_type, "activation",
                                          config.activation_bits, moving_rate=config.moving_rate)
        replace_layer(network, name, wrap_layer(layer, weight_quanter, activation_quanter))
    if inputs is not None:
        quantize_residual_outputs(network, inputs, config)
    return network


def layers_to_quantize(network, config):
    """``{name: layer}`` of the plain Conv2D / Linear layers that ``config.skip`` leaves to
    :func:`quantize`; a skip pattern matching no Conv2D / Linear layer is a ValueError."""
    candidates = quantizable_layers(network)
    names = list(candidates) + list(quantized_layers(network))
    for pattern in config.skip:
        if not any(fnmatch.fnmatchcase(n, pattern) for n in names):
            raise ValueError(
                f"quantize: skip pattern {pattern!r} matches no Conv2D/Linear layer; "
                f"layers: {names[:20]}{' ...' if len(names) > 20 else ''}")
    return {name: layer for name, layer in candidates.items()
            if not any(fnmatch.fnmatchcase(name, p) for p in config.skip)}
