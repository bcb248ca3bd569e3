"""Capture the outputs of named sublayers with forward hooks."""
from __future__ import annotations

import difflib

import paddle


class UnknownLayerError(KeyError):
    """A layer name that the network does not have."""

    def __str__(self):
        return self.args[0]


def unwrap(network):
    """The layer inside a ``paddle.DataParallel`` wrapper, else ``network`` itself."""
    return network._layers if isinstance(network, paddle.DataParallel) else network


def find_layer(network, name, role="network"):
    """Return the sublayer of ``network`` called ``name`` (as in ``named_sublayers``).

    An unknown name raises :class:`UnknownLayerError` listing the nearest names;
    ``role`` ("teacher", "student") says which network in the message.
    """
    if not isinstance(name, str):
        raise TypeError(f"{role} layer name must be a str, got {type(name).__name__}: {name!r}")
    layers = dict(unwrap(network).named_sublayers())
    if name in layers:
        return layers[name]
    nearest = ", ".join(map(repr, difflib.get_close_matches(name, list(layers), n=5, cutoff=0.0)))
    raise UnknownLayerError(
        f"{role} has no layer named {name!r}; nearest names: {nearest or '(none: it has no sublayers)'}")


class FeatureTap:
    """Record the output of each named sublayer of ``network`` on every forward.

    A forward pre-hook on ``network`` forgets the previous forward's outputs, so
    :meth:`get` returns what the layer produced in the latest forward. A layer that
    ran more than once in that forward (a shared activation, say) is refused, as
    its output is ambiguous.
    """

    def __init__(self, network, names, role="network"):
        self.names = list(dict.fromkeys(names))
        self.role = role
        self._hooks = []
        self._outputs = {}
        self._calls = {}
        self.attach(network)

    def attach(self, network):
        """(Re-)register the hooks on ``network``, looking every name up again."""
        self.remove()
        layers = {name: find_layer(network, name, self.role) for name in self.names}
        self._hooks.append(unwrap(network).register_forward_pre_hook(self._forget))
        for name, layer in layers.items():
            self._hooks.append(layer.register_forward_post_hook(self._recorder(name)))

    def _forget(self, layer, inputs):
        self._outputs.clear()
        self._calls.clear()

    def _recorder(self, name):
        def record(layer, inputs, output):
            self._outputs[name] = output
            self._calls[name] = self._calls.get(name, 0) + 1
        return record

    def get(self, name):
        """The output of layer ``name`` in the latest forward of the network."""
        calls = self._calls.get(name, 0)
        if calls == 0:
            raise RuntimeError(
                f"{self.role} layer {name!r} did not run in the latest forward of the {self.role}"
                + ("" if name in self.names else f" (it is not tapped; tapped: {self.names})"))
        if calls > 1:
            raise RuntimeError(
                f"{self.role} layer {name!r} ran {calls} times in one forward, so its output is "
                f"ambiguous; tap a layer that runs once (e.g. the block that contains it)")
        return self._outputs[name]

    def clear(self):
        """Drop the recorded outputs (and the graphs they hold)."""
        self._forget(None, None)

    def remove(self):
        """Unregister every hook and drop the recorded outputs."""
        for hook in self._hooks:
            hook.remove()
        self._hooks = []
        self.clear()
