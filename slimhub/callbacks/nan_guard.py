"""Stop training as soon as the loss is NaN or infinite."""
from __future__ import annotations

import math
import sys

from slimhub.callbacks.base import Callback


class NaNGuard(Callback):
    """Stops at the first non-finite step loss, saying which epoch and step."""

    def __init__(self, stream=None):
        super().__init__()
        self.stream = stream or sys.stderr
        self.message = None

    def on_train_batch_end(self, step, logs=None):
        loss = (logs or {}).get("step_loss", (logs or {}).get("loss"))
        if loss is not None and not math.isfinite(loss):
            epoch = getattr(self.model, "epoch", None)
            self.message = (f"NaNGuard: loss is {loss} at epoch {epoch + 1 if epoch is not None else '?'}, "
                            f"step {step + 1}; training stopped")
            print(self.message, file=self.stream, flush=True)
            self.model.stop_training = True
