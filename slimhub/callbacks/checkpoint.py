"""ModelCheckpoint: the last and the best training state, written atomically."""
from __future__ import annotations

import math
import os

from slimhub.callbacks.base import Callback


class ModelCheckpoint(Callback):
    """Saves ``save_dir/last.pdckpt`` after every epoch (and every ``save_steps`` steps)
    and ``save_dir/best.pdckpt`` when ``monitor`` improves.

    ``monitor`` names a log entry (e.g. ``"eval_acc_top1"``); ``mode`` is "max" or "min".
    """

    def __init__(self, save_dir, monitor="eval_acc_top1", mode="max", save_steps=None):
        super().__init__()
        if mode not in ("max", "min"):
            raise ValueError(f"ModelCheckpoint: mode must be 'max' or 'min', got {mode!r}")
        if save_steps is not None and (not isinstance(save_steps, int) or save_steps <= 0):
            raise ValueError(f"ModelCheckpoint: save_steps must be a positive integer, got {save_steps!r}")
        self.save_dir = save_dir
        self.monitor = monitor
        self.mode = mode
        self.save_steps = save_steps
        self.best = None

    def state_dict(self):
        return {"best": self.best}

    def set_state_dict(self, state):
        self.best = state["best"]

    def _improved(self, value):
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return False
        if self.best is None:
            return True
        return value > self.best if self.mode == "max" else value < self.best

    def on_train_batch_end(self, step, logs=None):
        if self.save_steps and self.model.global_step % self.save_steps == 0:
            self.model.save(os.path.join(self.save_dir, "last.pdckpt"))

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if self._improved(value):
            self.best = value
            self.model.save(os.path.join(self.save_dir, "best.pdckpt"))
        self.model.save(os.path.join(self.save_dir, "last.pdckpt"))
