"""Progress bar: steps/s, ETA and live metrics, quiet when not a terminal or verbose=0."""
from __future__ import annotations

import sys

from tqdm.auto import tqdm

from slimhub.callbacks.base import Callback


def _fmt(logs, skip=("lr", "batch_size", "step_loss")):
    return {k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in logs.items() if k not in skip}


class ProgressBar(Callback):
    """A tqdm bar per epoch; at the end of each epoch one summary line is printed.

    ``verbose=0`` prints nothing; ``verbose=1`` shows the bar only on a terminal and
    the epoch summaries always; ``verbose=2`` prints only the epoch summaries.
    """

    def __init__(self, verbose=1, stream=None):
        super().__init__()
        self.verbose = verbose
        self.stream = stream or sys.stderr
        self._bar = None

    def _active(self):
        return self.verbose and getattr(self.model, "is_main_process", True)

    def on_epoch_begin(self, epoch, logs=None):
        if not self._active() or self.verbose != 1:
            return
        self._bar = tqdm(total=self.params.get("steps"), desc=f"epoch {epoch + 1}/{self.params['epochs']}",
                         unit="step", file=self.stream, leave=False, dynamic_ncols=True,
                         disable=None, initial=getattr(self.model, "step_in_epoch", 0))

    def on_train_batch_end(self, step, logs=None):
        if self._bar is not None:
            self._bar.set_postfix(_fmt(logs or {}), refresh=False)
            self._bar.update(1)

    def on_epoch_end(self, epoch, logs=None):
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self._active():
            items = " ".join(f"{k}={v}" for k, v in _fmt(logs or {}).items())
            print(f"epoch {epoch + 1}/{self.params['epochs']}: {items}", file=self.stream, flush=True)

    def on_train_end(self, logs=None):
        if self._bar is not None:
            self._bar.close()
            self._bar = None
