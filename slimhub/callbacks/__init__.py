"""Callbacks: hapi's hook names plus the events compression needs (see base.py)."""
from slimhub.callbacks.base import Callback, keep_float
from slimhub.callbacks.callback_list import CallbackList
from slimhub.callbacks.checkpoint import ModelCheckpoint
from slimhub.callbacks.distill import DistillCallback
from slimhub.callbacks.early_stopping import EarlyStopping
from slimhub.callbacks.loggers import TensorBoardLogger, VisualDLLogger
from slimhub.callbacks.lr_scheduler import LRSchedulerStep
from slimhub.callbacks.nan_guard import NaNGuard, NonFiniteLossError
from slimhub.callbacks.progress import ProgressBar
from slimhub.callbacks.prune import PruneCallback
from slimhub.callbacks.qat import QATCallback

__all__ = ["Callback", "CallbackList", "DistillCallback", "ModelCheckpoint", "EarlyStopping", "TensorBoardLogger",
           "VisualDLLogger", "LRSchedulerStep", "NaNGuard", "NonFiniteLossError", "ProgressBar", "PruneCallback",
           "QATCallback", "keep_float"]
