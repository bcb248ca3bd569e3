"""Scalar loggers: VisualDL and tensorboardX (loss, metrics, learning rate, trainer.log scalars)."""
from __future__ import annotations

from slimhub.callbacks.base import Callback

_SKIP = ("batch_size", "loss")  # per-step logs carry the running mean as "loss"; the step's is "step_loss"


class _ScalarLogger(Callback):
    """Writes every numeric log entry per step (``train/``) and per epoch (``epoch/``)."""

    def __init__(self, log_dir, log_every=1):
        super().__init__()
        self.log_dir = log_dir
        self.log_every = log_every
        self.writer = None

    def _open(self):
        raise NotImplementedError

    def _main(self):
        return getattr(self.model, "is_main_process", True)

    def on_train_begin(self, logs=None):
        if self._main() and self.writer is None:
            self.writer = self._open()

    def _write(self, prefix, logs, step):
        for name, value in logs.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(f"{prefix}/{name}", float(value), step)

    def on_train_batch_end(self, step, logs=None):
        global_step = getattr(self.model, "global_step", step)
        if self.writer is not None and global_step % self.log_every == 0:
            self._write("train", {k: v for k, v in (logs or {}).items() if k not in _SKIP}, global_step)

    def on_epoch_end(self, epoch, logs=None):
        if self.writer is not None:
            self._write("epoch", logs or {}, epoch + 1)
            self.writer.flush()

    def on_train_end(self, logs=None):
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class VisualDLLogger(_ScalarLogger):
    """Logs to VisualDL (``visualdl --logdir LOG_DIR`` to view)."""

    def _open(self):
        from visualdl import LogWriter
        return LogWriter(logdir=self.log_dir)


class TensorBoardLogger(_ScalarLogger):
    """Logs to TensorBoard event files through tensorboardX."""

    def _open(self):
        from tensorboardX import SummaryWriter
        return SummaryWriter(logdir=self.log_dir)
