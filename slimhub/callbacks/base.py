"""The callback contract: Paddle hapi's hooks plus the hooks compression needs.

A slimhub callback subclasses :class:`paddle.callbacks.Callback`, so one whose work
fits hapi's hooks also runs under ``paddle.Model.fit``. ``self.model`` is the
:class:`slimhub.Trainer` (or hapi's ``paddle.Model``); both expose the layer being
trained as ``self.model.network``.

Hooks added for compression (called by the slimhub Trainer only):

- ``on_loss(inputs, outputs, labels)`` returns ``None`` or a dict ``{name: scalar
  Tensor}`` of already-weighted terms that the Trainer adds to the task loss and
  logs under their names (distillation).
- ``on_structure_changed(network)`` runs on every callback after any callback
  reshaped or replaced parameters and called :meth:`Callback.structure_changed`;
  the Trainer has already rebound the optimizer to the new parameters.
- ``on_export(path)`` runs after ``trainer.export(path, ...)``; a callback writes files
  that belong beside the exported model (the pruning plan) and returns their paths.
- ``state_dict()`` / ``set_state_dict(state)`` persist a callback in checkpoints.
  ``set_state_dict`` runs before the network weights are loaded, so a callback whose
  state implies a changed structure (a pruning plan, quantizers) re-applies it there.

A layer a callback adds to the network for training only (distillation adapters) is
marked with :func:`keep_float`; quantization leaves it and its sublayers in float.
A callback that is a recipe strategy declares what its arguments may be in ``contract``
(:class:`slimhub.rules.StrategyContract`).
"""
from __future__ import annotations

import paddle

from slimhub.rules import StrategyContract
from slimhub.optim import rebind_optimizer

KEEP_FLOAT = "slimhub_keep_float"
"""The attribute :func:`keep_float` sets on a layer."""


def keep_float(layer):
    """Mark ``layer``, added for training only, to stay float when the network is
    quantized (it and its sublayers); returns it."""
    setattr(layer, KEEP_FLOAT, True)
    return layer


def float_layers(network):
    """Names of the sublayers of ``network`` that :func:`keep_float` marked, and of theirs."""
    names = []
    for name, layer in network.named_sublayers():
        if getattr(layer, KEEP_FLOAT, False):
            names += [name] + [f"{name}.{sub}" for sub, _ in layer.named_sublayers()]
    return names


def host_optimizer(model):
    """The optimizer of a callback's host: the Trainer's ``optimizer``, or that of hapi's
    ``paddle.Model``, which Paddle 3.3.1 keeps only in the private ``_optimizer`` (no public
    way reads or rebinds it), so this is the one place that reaches into it; None if none."""
    if hasattr(model, "optimizer"):
        return model.optimizer
    return getattr(model, "_optimizer", None)


def rebind_hapi_optimizer(model):
    """Rebind the optimizer of hapi's ``paddle.Model`` to its network after a structure change."""
    rebind_optimizer(host_optimizer(model), model.network)


def check_same_settings(callback, saved, own):
    """A ``ValueError`` naming every setting whose value in a checkpoint (``saved``) differs
    from this callback's (``own``): resuming with other settings would train something else."""
    diff = [k for k in sorted(set(saved) | set(own)) if saved.get(k) != own.get(k)]
    if diff:
        raise ValueError(
            f"{callback}: the checkpoint was trained with "
            + ", ".join(f"{k}={saved.get(k)!r}" for k in diff) + "; this callback has "
            + ", ".join(f"{k}={own.get(k)!r}" for k in diff)
            + "; pass the same settings to resume (or start a new save_dir)")


class Callback(paddle.callbacks.Callback):
    """Base class: every hook does nothing until overridden."""

    contract = StrategyContract()
    """As a recipe strategy: ``start_epoch`` and ``end_epoch`` by their rules, other arguments
    by their default's type; the window from ``start_epoch`` up to ``end_epoch``."""

    def on_loss(self, inputs, outputs, labels):
        return None

    def on_structure_changed(self, network):
        pass

    def on_export(self, path):
        return []

    def state_dict(self):
        return {}

    def set_state_dict(self, state):
        pass

    @property
    def network(self):
        """The layer being trained, under the slimhub Trainer or ``paddle.Model``."""
        return self.model.network

    def structure_changed(self):
        """Tell the trainer that parameters were reshaped, added or removed."""
        if hasattr(self.model, "structure_changed"):
            self.model.structure_changed()
        else:
            rebind_hapi_optimizer(self.model)

    def log(self, name, value):
        """Report a scalar; a no-op under ``paddle.Model``, which has no scalar log."""
        if hasattr(self.model, "log"):
            self.model.log(name, value)
