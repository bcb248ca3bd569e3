"""Stop training as soon as the loss is NaN or infinite."""
from __future__ import annotations

import math
import sys

from slimhub.callbacks.base import Callback
from slimhub.callbacks.checkpoint import nonfinite_state

ACTIONS = ("raise", "stop", "warn")


class NonFiniteLossError(ValueError):
    """Training stopped because the loss was NaN or infinite (see :class:`NaNGuard`)."""


def _scalar(value):
    if isinstance(value, (list, tuple)) and len(value) == 1:  # paddle.Model logs [loss]
        value = value[0]
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


class NaNGuard(Callback):
    """Watches every training step's loss, and the weights and buffers at the last step of
    each epoch (a NaN input can poison a layer while the loss stays finite, e.g. behind a
    ReLU); at the first NaN or infinite value, ``action``:

    - ``"stop"`` (default): print the message, stop training; ``fit`` returns the history.
    - ``"raise"``: stop training; ``Trainer.fit`` then raises :class:`NonFiniteLossError`
      with the message (after every callback's ``on_train_end``).
    - ``"warn"``: print the message once and train on.

    The message names the epoch and step, counted from 1. ``Trainer.fit`` adds
    ``NaNGuard("raise")`` to every fit whose callbacks hold no NaNGuard; pass your own to
    choose another action. Checkpoints are never written from a non-finite
    state whatever the action (see :class:`ModelCheckpoint`). Under ``paddle.Model.fit``
    "raise" acts as "stop". ``message`` holds the report once the guard fired.
    """

    def __init__(self, action="stop", stream=None):
        super().__init__()
        if action not in ACTIONS:
            raise ValueError(f"NaNGuard: action must be one of {list(ACTIONS)}, got {action!r}")
        if stream is not None and not callable(getattr(stream, "write", None)):
            raise TypeError(f"NaNGuard: stream must be a text stream with .write(), got {stream!r}")
        self.action = action
        self.stream = stream
        self.message = None

    def on_train_begin(self, logs=None):
        self.message = None

    def on_train_batch_end(self, step, logs=None):
        if self.message is not None:
            return
        logs = logs or {}
        loss = _scalar(logs.get("step_loss", logs.get("loss")))
        if loss is not None and not math.isfinite(loss):
            self._fire(step, f"loss is {loss}")
        elif step + 1 == (self.params or {}).get("steps"):
            name = nonfinite_state(self.network)
            if name is not None:
                self._fire(step, f"{name} holds NaN or infinite values (the loss is finite)")

    def _fire(self, step, what):
        epoch = getattr(self.model, "epoch", None)
        where = f"epoch {epoch + 1}, step {step + 1}" if epoch is not None else f"step {step + 1}"
        global_step = getattr(self.model, "global_step", None)
        if global_step is not None:
            where += f" (global step {global_step})"
        if self.action == "warn":
            self.message = f"NaNGuard: {what} at {where}; training goes on (action='warn')"
        else:
            self.message = f"NaNGuard: {what} at {where}; training stopped"
            self.model.stop_training = True
        if self.action != "raise" or not getattr(self.model, "raises_nonfinite_loss", False):
            print(self.message, file=self.stream or sys.stderr, flush=True)

    @property
    def fired(self):
        """Whether the guard stopped training (actions "raise" and "stop")."""
        return self.message is not None and self.action != "warn"
