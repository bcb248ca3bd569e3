"""Stepping the optimizer's learning-rate scheduler."""
from __future__ import annotations

from slimhub import validate
from slimhub.callbacks.base import Callback, host_optimizer
from slimhub.optim import lr_scheduler


class LRSchedulerStep(Callback):
    """Calls ``scheduler.step()`` after every epoch (default) or every batch.

    The scheduler's state travels with the optimizer's state in checkpoints.
    """

    def __init__(self, by_step=False):
        super().__init__()
        self.by_step = validate.boolean(by_step, "LRSchedulerStep: by_step")

    def _scheduler(self):
        return lr_scheduler(host_optimizer(self.model))

    def on_train_batch_end(self, step, logs=None):
        if self.by_step and self._scheduler() is not None:
            self._scheduler().step()

    def on_epoch_end(self, epoch, logs=None):
        if not self.by_step and self._scheduler() is not None:
            self._scheduler().step()
