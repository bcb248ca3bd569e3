"""The callbacks a fit adds to the user's: assembled here, outside the Trainer."""
from __future__ import annotations

from slimhub.callbacks.checkpoint import ModelCheckpoint
from slimhub.callbacks.lr_scheduler import LRSchedulerStep
from slimhub.callbacks.nan_guard import NaNGuard
from slimhub.callbacks.progress import ProgressBar
from slimhub.optim import lr_scheduler


def config_callbacks(callbacks, optimizer, save_dir, verbose):
    """``callbacks`` (a list) with those a fit adds where none of its kind was given: a
    progress bar (``verbose`` > 0), the scheduler step (``optimizer`` has an LRScheduler), a
    checkpoint in ``save_dir`` (when given) and ``NaNGuard("raise")``; in the order they run."""
    cbs = list(callbacks)
    if verbose and not any(isinstance(c, ProgressBar) for c in cbs):
        cbs.insert(0, ProgressBar(verbose=verbose))
    if lr_scheduler(optimizer) is not None and not any(isinstance(c, LRSchedulerStep) for c in cbs):
        cbs.append(LRSchedulerStep())
    if save_dir is not None and not any(isinstance(c, ModelCheckpoint) for c in cbs):
        cbs.append(ModelCheckpoint(save_dir))
    if not any(isinstance(c, NaNGuard) for c in cbs):
        cbs.append(NaNGuard("raise"))
    # checkpoints after the others, so that they see every other callback's state for the
    # step; NaN guards last, so that every other callback has ended when one raises
    cbs.sort(key=lambda c: isinstance(c, ModelCheckpoint) + 2 * isinstance(c, NaNGuard))
    return cbs
