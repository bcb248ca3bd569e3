"""DistillCallback: add distillation terms from a frozen teacher to the student's loss."""
from __future__ import annotations

from collections.abc import Mapping

from paddle import nn

from slimhub.callbacks.base import Callback, check_same_settings, keep_float
from slimhub.rules import MAPPING, StrategyContract, active_epochs, list_of
from slimhub.distill.distiller import Distiller, parse_losses
from slimhub.distill.taps import find_layer, unwrap

ADAPTERS = "distill_adapters"
"""Attribute of the student under which ``l2`` adapters live while training."""


def _plain(value):
    """``value`` with callables replaced by their qualified names (comparable, picklable)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if callable(value):
        return f"{getattr(value, '__module__', '')}.{getattr(value, '__qualname__', type(value).__name__)}"
    return value


class DistillCallback(Callback):
    """Distil ``teacher`` into the Trainer's network during epochs ``[start_epoch, end_epoch)``.

    ``losses`` is a list of dicts as in :class:`slimhub.distill.Distiller`, e.g.
    ``[{"type": "soft_label", "teacher": "fc", "student": "fc", "temperature": 4.0}]``.
    Each weighted term is added to the task loss and logged under its name.

    Adapters of ``l2`` terms are attached to the student as the sublayer
    ``distill_adapters`` while training, so that the optimizer trains them and
    checkpoints hold them (marked :func:`~slimhub.callbacks.keep_float`: quantization
    leaves them float); they are created at the first step (and re-created when
    pruning changes the student's channels), and detached when training ends, which
    leaves the student exactly as exported. Exports taken during training are clean
    too: adapters take no part in the student's forward.
    Needs the slimhub Trainer in dygraph mode (``static=False``). A checkpoint holding
    adapters also records ``losses``, ``start_epoch`` and ``end_epoch``; resuming it with
    other values is an error.
    """

    contract = StrategyContract({"losses": list_of(MAPPING, 1)}, models=("teacher",))

    def __init__(self, teacher, losses, start_epoch=0, end_epoch=None):
        super().__init__()
        self.contract.check("DistillCallback", start_epoch=start_epoch, end_epoch=end_epoch)
        if not isinstance(teacher, nn.Layer):
            raise TypeError(
                f"DistillCallback: teacher must be a paddle.nn.Layer, got {type(teacher).__name__}")
        for term in parse_losses(losses):  # fail here, not at the first step
            for name in term.layers("teacher"):
                find_layer(teacher, name, "teacher")
        self.teacher = teacher
        self.losses = losses
        self.start_epoch = start_epoch
        self.end_epoch = end_epoch
        self.distiller = None
        self._training = False  # hooks are on the networks only while fit runs
        self._attached = ()  # names of the adapter parameters the optimizer was given

    def _ensure_distiller(self):
        if self.distiller is None:
            self.distiller = Distiller(self.teacher, self.network, self.losses)
        return self.distiller

    def _active(self):
        first, last = active_epochs(self.start_epoch, self.end_epoch, self.params["epochs"])
        return first <= self.model.epoch <= last

    def _sync_adapters(self):
        """Attach new or re-created adapters to the student and rebind the optimizer."""
        params = self.distiller.adapters.parameters()
        names = tuple(p.name for p in params)
        if names == self._attached:
            return
        for p in params:  # gradients of the step that created them, never applied
            p.clear_gradient()
        self._attach()
        self.structure_changed()

    def _attach(self):
        unwrap(self.network).add_sublayer(ADAPTERS, keep_float(self.distiller.adapters))
        self._attached = tuple(p.name for p in self.distiller.adapters.parameters())

    def on_train_begin(self, logs=None):
        if not hasattr(self.model, "structure_changed"):
            raise TypeError("DistillCallback needs slimhub.Trainer: paddle.Model has no loss hook")
        if getattr(self.model, "static", False):
            raise ValueError("DistillCallback needs a dygraph Trainer (static=False): forward hooks "
                             "cannot read features out of a to_static program")
        self.check_student(self.network)
        self._ensure_distiller().rebind(self.network)
        self._training = True
        self._sync_adapters()

    def on_loss(self, inputs, outputs, labels):
        if not self._active():
            return None
        return self.distiller.loss(inputs)

    def on_train_batch_end(self, step, logs=None):
        self._sync_adapters()

    def on_structure_changed(self, network):
        if self._training:
            self.distiller.rebind(network)

    def on_train_end(self, logs=None):
        if not self._training:
            return
        self._training = False
        self.distiller.close()
        if self._attached:
            delattr(unwrap(self.network), ADAPTERS)
            self._attached = ()
            self.structure_changed()

    def check_student(self, student):
        """A ``TypeError`` when ``l2`` adapters cannot be attached to ``student``."""
        if isinstance(unwrap(student), nn.Sequential) and any(t.adapter for t in parse_losses(self.losses)):
            raise TypeError("DistillCallback: l2 adapters become a sublayer of the student, and a "
                            "paddle.nn.Sequential student would run them as one of its layers: build the "
                            "model as a Layer whose forward calls the Sequential, or adapter: false")

    def settings(self):
        """The arguments that decide the distillation terms and when they apply."""
        return {"losses": _plain(self.losses), "start_epoch": self.start_epoch, "end_epoch": self.end_epoch}

    def state_dict(self):
        """The adapters while they are attached (so the state matches the network's)."""
        return {**self.distiller.state_dict(), "settings": self.settings()} if self._attached else {}

    def set_state_dict(self, state):
        """Re-create the saved adapters and attach them before the network's weights load."""
        if "settings" in state:  # checkpoints written before settings were kept have none
            check_same_settings("DistillCallback", state["settings"], self.settings())
        self._ensure_distiller().set_state_dict(state)
        if len(self.distiller.adapters):
            self._attach()
