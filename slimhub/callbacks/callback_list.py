"""Dispatch of events to a list of callbacks."""
from __future__ import annotations

import paddle

from slimhub.callbacks.base import Callback

HAPI_HOOKS = tuple(name for name in dir(paddle.callbacks.Callback) if name.startswith("on_"))


class CallbackList:
    """Calls each hook on every callback in order; adds slimhub's extra events."""

    def __init__(self, callbacks):
        self.callbacks = list(callbacks)
        for cb in self.callbacks:
            if not isinstance(cb, paddle.callbacks.Callback):
                raise TypeError(
                    f"callbacks: {cb!r} is a {type(cb).__name__}, not a paddle.callbacks.Callback "
                    "(subclass slimhub.callbacks.Callback)")

    def __iter__(self):
        return iter(self.callbacks)

    def set_model(self, trainer):
        for cb in self.callbacks:
            cb.set_model(trainer)

    def set_params(self, params):
        for cb in self.callbacks:
            cb.set_params(params)

    def call(self, hook, *args):
        for cb in self.callbacks:
            result = getattr(cb, hook)(*args)
            if result is not None:
                raise TypeError(
                    f"callback {type(cb).__name__}.{hook} returned {type(result).__name__}; "
                    "hapi hooks must return None (only on_loss returns loss terms)")

    def loss_terms(self, inputs, outputs, labels):
        """Collect ``{name: scalar Tensor}`` from every callback's ``on_loss``."""
        terms = {}
        for cb in self.callbacks:
            if not isinstance(cb, Callback):
                continue
            result = cb.on_loss(inputs, outputs, labels)
            if result is None:
                continue
            if not isinstance(result, dict) or not all(
                    isinstance(k, str) and isinstance(v, paddle.Tensor) for k, v in result.items()):
                raise TypeError(
                    f"callback {type(cb).__name__}.on_loss must return None or a dict of "
                    f"{{name: scalar Tensor}}, got {result!r:.200}")
            for name, value in result.items():
                if name in terms:
                    raise ValueError(f"loss term {name!r} is returned by two callbacks")
                if value.size != 1:
                    raise ValueError(
                        f"callback {type(cb).__name__}.on_loss term {name!r} has shape "
                        f"{list(value.shape)}; loss terms must be scalars")
                terms[name] = value
        return terms

    def structure_changed(self, network):
        for cb in self.callbacks:
            if isinstance(cb, Callback):
                cb.on_structure_changed(network)

    def export_files(self, path):
        """Files the callbacks write beside an export at ``path``."""
        return [f for cb in self.callbacks if isinstance(cb, Callback) for f in cb.on_export(path)]

    def keys(self):
        """The names checkpoints keep the callbacks' states under (``PruneCallback.0``, ...)."""
        counts = {}
        keys = []
        for cb in self.callbacks:
            name = type(cb).__name__
            keys.append(f"{name}.{counts.get(name, 0)}")
            counts[name] = counts.get(name, 0) + 1
        return keys

    def state_dict(self):
        return {key: cb.state_dict() for key, cb in zip(self.keys(), self.callbacks)
                if isinstance(cb, Callback) and cb.state_dict()}

    def set_state_dict(self, states, source, strict=True):
        """Give each callback its saved state. ``strict``: a state whose callback is not in
        the list is an error (resuming needs them all); otherwise such states are left
        unused and their keys returned."""
        by_key = dict(zip(self.keys(), self.callbacks))
        missing = sorted(set(states) - set(by_key))
        if missing and strict:
            raise ValueError(
                f"{source}: the checkpoint holds state of callbacks {missing} that this fit "
                f"was not given (it has {sorted(by_key) or 'none'}); pass the same callbacks "
                "that trained it")
        for key, state in states.items():
            if key in by_key:
                by_key[key].set_state_dict(state)
        return missing
