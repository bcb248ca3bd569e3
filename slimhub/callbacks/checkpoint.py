"""ModelCheckpoint: the last and the best training state, written atomically."""
from __future__ import annotations

import math
import os
import warnings

from slimhub import validate
from slimhub.callbacks.base import Callback
from slimhub.checkpoint import BEST_CHECKPOINT, LAST_CHECKPOINT, prepare_folder


class ModelCheckpoint(Callback):
    """Saves ``save_dir/last.pdckpt`` after every epoch (and every ``save_steps`` steps)
    and ``save_dir/best.pdckpt`` when ``monitor`` improves.

    ``monitor`` names a log entry (e.g. ``"eval_acc_top1"``); ``mode`` is "max" or "min".
    A state whose loss, weights or buffers are NaN or infinite is never written: the files
    keep the last finite state, and one warning says so (``skipped`` counts the saves left
    out). When training begins the folder is checked (a writable folder, or creatable) and
    temporary files that an interrupted save left there are removed.
    """

    def __init__(self, save_dir, monitor="eval_acc_top1", mode="max", save_steps=None):
        super().__init__()
        self.save_dir = validate.folder(save_dir, "ModelCheckpoint: save_dir")
        if not isinstance(monitor, str) or not monitor:
            raise TypeError(f"ModelCheckpoint: monitor must be the name of a log entry such as "
                            f"'eval_acc_top1', got {monitor!r}")
        if mode not in ("max", "min"):
            raise ValueError(f"ModelCheckpoint: mode must be 'max' or 'min', got {mode!r}")
        if save_steps is not None:
            validate.integer(save_steps, "ModelCheckpoint: save_steps")
        self.monitor = monitor
        self.mode = mode
        self.save_steps = save_steps
        self.best = None
        self.skipped = 0

    def state_dict(self):
        return {"best": self.best}

    def set_state_dict(self, state):
        self.best = state["best"]

    def _improved(self, value):
        value = validate.scalar(value)
        if value is None or not math.isfinite(value):
            return False
        return self.best is None or (value > self.best if self.mode == "max" else value < self.best)

    def on_train_begin(self, logs=None):
        self.skipped = 0
        if getattr(self.model, "is_main_process", True):
            prepare_folder(self.save_dir, "ModelCheckpoint: save_dir")

    def _finite(self, loss, where):
        """Whether the current state may be written; the first time it may not, a warning."""
        loss = validate.scalar(loss)
        if loss is not None and not math.isfinite(loss):
            reason = f"the loss is {loss}"
        else:
            name = validate.nonfinite_state(self.network)
            if name is None:
                return True
            reason = f"{name} holds NaN or infinite values"
        if self.skipped == 0:
            warnings.warn(f"ModelCheckpoint: not saving at {where} ({reason}); {self.save_dir} keeps "
                          "the last finite state")
        self.skipped += 1
        return False

    def on_train_batch_end(self, step, logs=None):
        if self.save_steps and self.model.global_step % self.save_steps == 0:
            logs = logs or {}
            if self._finite(logs.get("step_loss"), f"epoch {self.model.epoch + 1}, step {step + 1}"):
                self.model.save(os.path.join(self.save_dir, LAST_CHECKPOINT))

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if not self._finite(logs.get("loss"), f"the end of epoch {epoch + 1}"):
            return
        if self._improved(logs.get(self.monitor)):
            self.best = validate.scalar(logs[self.monitor])
            self.model.save(os.path.join(self.save_dir, BEST_CHECKPOINT))
        self.model.save(os.path.join(self.save_dir, LAST_CHECKPOINT))
