"""Stop training as soon as the loss is NaN or infinite."""
from __future__ import annotations

import math
import sys

from slimhub.callbacks.base import Callback
from slimhub.validate import nonfinite_state, scalar

ACTIONS = ("raise", "stop", "warn")


class NonFiniteLossError(ValueError):
    """Training stopped because the loss (or a weight) was NaN or infinite (see :class:`NaNGuard`)."""


class NaNGuard(Callback):
    """Watches every training step's loss, and the weights and buffers at each epoch's last
    step (BatchNorm trains on batch statistics, so NaN running statistics leave the loss
    finite). At the first NaN or infinite value, which the message names by epoch and step
    (counted from 1):

    - ``action="stop"`` (default): print the message and stop training; ``fit`` returns.
    - ``action="raise"``: stop training, and raise :class:`NonFiniteLossError` with the
      message from ``on_train_end`` (the Trainer puts NaN guards last, so every other
      callback has ended by then).
    - ``action="warn"``: print the message once and train on.

    ``Trainer.fit`` adds ``NaNGuard("raise")`` to a fit whose callbacks hold no NaNGuard;
    pass one of another action to opt out. Whatever the action, :class:`ModelCheckpoint`
    never writes a non-finite state. ``message`` holds the report once the guard fired.
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
        loss = scalar(logs.get("step_loss", logs.get("loss")))
        if loss is not None and not math.isfinite(loss):
            self._fire(step, f"the loss is {loss}")
        elif step + 1 == (self.params or {}).get("steps"):
            name = nonfinite_state(self.network)
            if name is not None:
                self._fire(step, f"{name} holds NaN or infinite values (the loss is finite)")

    def on_train_end(self, logs=None):
        if self.action == "raise" and self.message is not None:
            raise NonFiniteLossError(self.message)

    def _fire(self, step, what):
        epoch = getattr(self.model, "epoch", None)
        where = f"epoch {epoch + 1}, step {step + 1}" if epoch is not None else f"step {step + 1}"
        global_step = getattr(self.model, "global_step", None)
        if global_step is not None:
            where += f" (global step {global_step})"
        if self.action == "warn":
            self.message = f"NaNGuard: {what} at {where}; training goes on (action='warn')"
            print(self.message, file=self.stream or sys.stderr, flush=True)
            return
        self.message = f"NaNGuard: {what} at {where}; training stopped"
        self.model.stop_training = True
        if self.action == "raise":
            save_dir = (self.params or {}).get("save_dir")
            if save_dir:
                self.message += f"; {save_dir} keeps the last finite checkpoint"
        else:
            print(self.message, file=self.stream or sys.stderr, flush=True)
