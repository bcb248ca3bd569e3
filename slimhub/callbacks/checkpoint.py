"""ModelCheckpoint: the last and the best training state, written atomically."""
from __future__ import annotations

import math
import os
import warnings

import paddle

from slimhub.callbacks.base import Callback
from slimhub.checkpoint import prepare_folder


def nonfinite_state(network):
    """The name of the first floating-point weight or buffer of ``network`` holding a NaN or
    an infinity, or None when all are finite."""
    for name, tensor in network.state_dict().items():
        if paddle.is_floating_point(tensor) and tensor.size and \
                not bool(paddle.isfinite(tensor).all().item()):
            return name
    return None


def _finite(value):
    if isinstance(value, (list, tuple)) and len(value) == 1:  # paddle.Model logs [loss]
        value = value[0]
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return True  # not a number: nothing to judge


class ModelCheckpoint(Callback):
    """Saves ``save_dir/last.pdckpt`` after every epoch (and every ``save_steps`` steps)
    and ``save_dir/best.pdckpt`` when ``monitor`` improves.

    ``monitor`` names a log entry (e.g. ``"eval_acc_top1"``); ``mode`` is "max" or "min".
    A state whose loss is NaN or infinite, or whose weights or buffers are, is never
    written: the files keep the last finite state, and a warning says so (``skipped``
    counts the saves left out). The folder is checked when training begins (it must be a
    writable folder, or creatable), and temporary files that an interrupted save left
    there are removed.
    """

    def __init__(self, save_dir, monitor="eval_acc_top1", mode="max", save_steps=None):
        super().__init__()
        if isinstance(save_dir, bool) or not isinstance(save_dir, (str, os.PathLike)) or not os.fspath(save_dir):
            raise TypeError(f"ModelCheckpoint: save_dir must be a folder path (str), got {save_dir!r}")
        if not isinstance(monitor, str) or not monitor:
            raise TypeError(f"ModelCheckpoint: monitor must be the name of a log entry such as "
                            f"'eval_acc_top1', got {monitor!r}")
        if mode not in ("max", "min"):
            raise ValueError(f"ModelCheckpoint: mode must be 'max' or 'min', got {mode!r}")
        if save_steps is not None and (isinstance(save_steps, bool) or not isinstance(save_steps, int)
                                       or save_steps <= 0):
            raise ValueError(f"ModelCheckpoint: save_steps must be a positive integer, got {save_steps!r}")
        self.save_dir = os.fspath(save_dir)
        self.monitor = monitor
        self.mode = mode
        self.save_steps = save_steps
        self.best = None
        self.skipped = 0
        self.last_saved = None  # (epoch, step in epoch, global step) of the last written last.pdckpt

    def state_dict(self):
        return {"best": self.best}

    def set_state_dict(self, state):
        self.best = state["best"]

    def _improved(self, value):
        if value is None or not _finite(value):
            return False
        if self.best is None:
            return True
        return value > self.best if self.mode == "max" else value < self.best

    def _main(self):
        return getattr(self.model, "is_main_process", True)

    def on_train_begin(self, logs=None):
        self.skipped = 0
        if self._main():
            prepare_folder(self.save_dir, "ModelCheckpoint: save_dir")

    def _refuse(self, loss):
        """Why the current state must not be written, or None."""
        if loss is not None and not _finite(loss):
            return f"the loss is {loss}"
        name = nonfinite_state(self.network)
        return f"{name} holds NaN or infinite values" if name else None

    def _skip(self, reason, where):
        if self.skipped == 0 and self._main():
            last = os.path.join(self.save_dir, "last.pdckpt")
            if self.last_saved:
                keeps = f"keeps the state of global step {self.last_saved[2]}"
            else:
                keeps = "keeps its earlier state" if os.path.exists(last) else "is not written"
            warnings.warn(f"ModelCheckpoint: not saving at {where} ({reason}); {last} {keeps}",
                          stacklevel=3)
        self.skipped += 1

    def _save_last(self):
        self.model.save(os.path.join(self.save_dir, "last.pdckpt"))
        self.last_saved = tuple(getattr(self.model, k, None)
                                for k in ("epoch", "step_in_epoch", "global_step"))

    def on_train_batch_end(self, step, logs=None):
        global_step = getattr(self.model, "global_step", None)
        if self.save_steps and global_step is not None and global_step % self.save_steps == 0:
            logs = logs or {}
            reason = self._refuse(logs.get("step_loss", logs.get("loss")))
            if reason:
                self._skip(reason, f"epoch {self.model.epoch + 1}, step {step + 1}")
                return
            self._save_last()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        reason = self._refuse(logs.get("loss"))
        if reason:
            self._skip(reason, f"the end of epoch {epoch + 1}")
            return
        value = logs.get(self.monitor)
        if self._improved(value):
            self.best = value
            self.model.save(os.path.join(self.save_dir, "best.pdckpt"))
        self._save_last()
