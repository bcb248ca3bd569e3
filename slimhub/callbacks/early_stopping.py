"""Stop training when a monitored value stops improving."""
from __future__ import annotations

from slimhub import validate
from slimhub.callbacks.base import Callback


class EarlyStopping(Callback):
    """Stops after ``patience`` epochs without an improvement of ``min_delta`` in ``monitor``."""

    def __init__(self, monitor="eval_loss", mode="min", patience=3, min_delta=0.0):
        super().__init__()
        if mode not in ("max", "min"):
            raise ValueError(f"EarlyStopping: mode must be 'max' or 'min', got {mode!r}")
        validate.integer(patience, "EarlyStopping: patience", 0)
        if isinstance(min_delta, bool) or not isinstance(min_delta, (int, float)) or \
                not min_delta >= 0 or min_delta == float("inf"):
            raise ValueError(f"EarlyStopping: min_delta must be a finite number >= 0, got {min_delta!r}")
        if not isinstance(monitor, str) or not monitor:
            raise TypeError(f"EarlyStopping: monitor must be the name of a log entry such as "
                            f"'eval_loss', got {monitor!r}")
        self.monitor, self.mode, self.patience, self.min_delta = monitor, mode, patience, min_delta
        self.best, self.wait = None, 0

    def state_dict(self):
        return {"best": self.best, "wait": self.wait}

    def set_state_dict(self, state):
        self.best, self.wait = state["best"], state["wait"]

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.monitor not in logs:
            raise KeyError(f"EarlyStopping: monitor {self.monitor!r} is not among the epoch logs "
                           f"{sorted(logs)} (did you pass eval_data?)")
        value = logs[self.monitor]
        if isinstance(value, (list, tuple)):  # paddle.Model logs a loss as a one-element list
            value = value[0]
        sign = 1 if self.mode == "max" else -1
        if self.best is None or sign * (value - self.best) > self.min_delta:
            self.best, self.wait = value, 0
            return
        self.wait += 1
        if self.wait >= self.patience:
            self.model.stop_training = True
