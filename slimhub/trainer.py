"""The training loop: batches, loss (task loss + callback terms), backward, step,
evaluation, events, checkpoints and exact resume."""
from __future__ import annotations

import numbers
import os
import random
import time
import warnings

import numpy as np
import paddle
from paddle import nn

from slimhub import distributed
from slimhub.callbacks.callback_list import CallbackList
from slimhub.callbacks.checkpoint import ModelCheckpoint, nonfinite_state
from slimhub.callbacks.lr_scheduler import LRSchedulerStep
from slimhub.callbacks.nan_guard import NaNGuard, NonFiniteLossError
from slimhub.callbacks.progress import ProgressBar
from slimhub.checkpoint import atomic_save, load_checkpoint, prepare_folder
from slimhub.export import export as export_model
from slimhub.optim import load_optimizer_state, optimizer_state, rebind_optimizer
from slimhub.quant.wrap import fill_in_grids

LAST_CHECKPOINT = "last.pdckpt"


def _metric_names(metric):
    names = metric.name()
    return list(names) if isinstance(names, (list, tuple)) else [names]


def _as_list(x):
    return list(x) if isinstance(x, (list, tuple)) else [x]


def _is_bool(value):
    return isinstance(value, (bool, np.bool_))


def _positive_int(value):
    return isinstance(value, numbers.Integral) and not _is_bool(value) and value > 0


def _first_line(exc):
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return (lines[0] if lines else type(exc).__name__)[:300]


def _first_layer(network):
    """``(name, layer)`` of the first Conv or Linear layer of ``network``, or None."""
    kinds = (nn.Conv1D, nn.Conv2D, nn.Conv3D, nn.Linear)
    for name, layer in network.named_sublayers(include_self=True):
        if isinstance(layer, kinds):
            return name or type(layer).__name__, layer
    return None


def input_mismatch(network, inputs):
    """Why ``inputs`` cannot enter ``network``'s first Conv or Linear layer, or None."""
    found = _first_layer(network)
    if found is None or not isinstance(inputs, paddle.Tensor):
        return None
    name, layer = found
    shape = list(inputs.shape)
    kind = type(layer).__name__
    if isinstance(layer, nn.Linear):
        want = layer.weight.shape[0]
        if len(shape) == 2 and shape[-1] != want:
            return (f"the inputs have {shape[-1]} features (batch shape {shape}) but the network's "
                    f"first layer {name!r} ({kind}) takes {want}")
        return None
    dims = len(layer.weight.shape)  # Conv1D/2D/3D weights have the rank of their inputs
    if len(shape) != dims:
        return (f"the inputs have shape {shape} but the network's first layer {name!r} ({kind}) "
                f"takes {dims}-D inputs (batch first)")
    want = layer.weight.shape[1] * getattr(layer, "_groups", 1)
    channels_last = str(getattr(layer, "_data_format", "NCHW")).endswith("C")
    got = shape[-1] if channels_last else shape[1]
    if got != want:
        return (f"the inputs have {got} channels (batch shape {shape}) but the network's first "
                f"layer {name!r} ({kind}) expects {want}")
    return None


def bad_label(labels, classes, ignore_index=None):
    """``(flat position, value)`` of the first label outside ``0..classes-1`` (and not
    ``ignore_index``) in the numpy array ``labels``, or None. One min/max when all are fine."""
    if labels.size == 0 or not (np.issubdtype(labels.dtype, np.integer) or
                                np.issubdtype(labels.dtype, np.floating)):
        return None
    if labels.min() >= 0 and labels.max() < classes:
        return None
    bad = (labels < 0) | (labels >= classes)
    if ignore_index is not None:
        bad &= labels != ignore_index
    if not bad.any():
        return None
    i = int(np.flatnonzero(bad)[0])
    value = labels.flat[i]
    return i, (int(value) if float(value).is_integer() else float(value))


class Trainer:
    """Train, evaluate, predict, checkpoint and export a ``paddle.nn.Layer``.

    ``static=True`` runs the network through ``paddle.jit.to_static``. ``amp`` is
    ``False``, ``"O1"`` or ``"O2"`` (``paddle.amp``; GPU only, ignored with a warning on CPU).
    """

    raises_nonfinite_loss = True
    """``fit`` raises :class:`NonFiniteLossError` itself after a ``NaNGuard("raise")`` stopped it."""

    def __init__(self, model, optimizer=None, loss=None, metrics=None, static=False, amp=False):
        if not isinstance(model, nn.Layer):
            raise TypeError(f"Trainer: model must be a paddle.nn.Layer, got {type(model).__name__}")
        if optimizer is not None and not isinstance(optimizer, paddle.optimizer.Optimizer):
            raise TypeError(
                f"Trainer: optimizer must be a paddle.optimizer.Optimizer, got {type(optimizer).__name__}")
        if loss is not None and not callable(loss):
            raise TypeError(f"Trainer: loss must be callable (outputs, labels) -> Tensor, got {loss!r}")
        metrics = _as_list(metrics) if metrics is not None else []
        for m in metrics:
            if not isinstance(m, paddle.metric.Metric):
                raise TypeError(
                    f"Trainer: metrics must be paddle.metric.Metric instances, got {type(m).__name__}")
        if amp not in (False, None, "O1", "O2") or (amp is not False and _is_bool(amp)):
            raise ValueError(f"Trainer: amp must be False, 'O1' or 'O2', got {amp!r}")
        if not _is_bool(static):
            raise TypeError(f"Trainer: static must be True or False, got {static!r}")
        params = getattr(optimizer, "_parameter_list", None) if optimizer is not None else None
        if params and not isinstance(params[0], dict):
            own = {id(p) for p in model.parameters()}
            if not any(id(p) in own for p in params):
                raise ValueError("Trainer: the optimizer holds none of the model's parameters (was it "
                                 "built for another network?); build it with parameters=model.parameters()")
        self.network = model
        self.optimizer = optimizer
        self.loss = loss
        self.metrics = metrics
        self.static = bool(static)
        self.amp = amp if amp and paddle.is_compiled_with_cuda() and "gpu" in paddle.get_device() else False
        if amp and not self.amp:
            import warnings
            warnings.warn("Trainer: amp needs a GPU; training in float32")
        self._scaler = paddle.amp.GradScaler() if self.amp else None
        self.callbacks = CallbackList([])
        self.epoch = 0
        self.global_step = 0
        self.step_in_epoch = 0
        self.stop_training = False
        self.eval_data = None
        self.history = {}
        self._scalars = {}
        self._label_rule = None
        self._runner = None
        self._build_runner()

    # ----------------------------------------------------------------- setup
    @property
    def is_main_process(self):
        return distributed.rank() == 0

    def _build_runner(self):
        """The callable that runs the network: dygraph, to_static, and/or DataParallel."""
        net = self.network
        if self.static:
            if isinstance(net.forward, paddle.jit.dy2static.program_translator.StaticFunction):
                net.forward = net.forward.rollback()
            paddle.jit.to_static(net, full_graph=True)
        self._runner = distributed.wrap(net)

    def structure_changed(self):
        """Parameters were reshaped, replaced or added: rebind the optimizer and tell callbacks."""
        if self.optimizer is not None:
            rebind_optimizer(self.optimizer, self.network)
        self._build_runner()
        self.callbacks.structure_changed(self.network)

    def log(self, name, value):
        """Report a scalar; its latest value appears in every later step and epoch log."""
        self._scalars[str(name)] = float(value.item() if isinstance(value, paddle.Tensor) else value)

    # ------------------------------------------------------------------ data
    def _loader(self, data, batch_size, shuffle, epoch=0, skip=0, num_workers=0, drop_last=False):
        if isinstance(data, paddle.io.DataLoader):
            return data, skip
        if not isinstance(data, paddle.io.Dataset):
            raise TypeError(
                "data must be a paddle.io.Dataset or paddle.io.DataLoader, got "
                f"{type(data).__name__}")
        sampler = distributed.EpochBatchSampler(
            data, batch_size, shuffle=shuffle, epoch=epoch, skip=skip, drop_last=drop_last)
        return paddle.io.DataLoader(data, batch_sampler=sampler, num_workers=num_workers), 0

    @staticmethod
    def _count_batches(data, batch_size, drop_last, what):
        """Batches per epoch of ``data`` (None when a DataLoader cannot say); a one-line error
        naming ``what`` when it is not data, or holds no sample or no batch."""
        if isinstance(data, paddle.io.DataLoader):
            try:
                steps = len(data)
            except (TypeError, ValueError, NotImplementedError):
                steps = None  # an iterable dataset: look at its first batch
                if next(iter(data), None) is None:
                    raise ValueError(f"{what} is a DataLoader that yields no batches") from None
            if steps == 0:
                raise ValueError(f"{what} is a DataLoader that yields no batches (its length is 0)")
            return steps
        if not isinstance(data, paddle.io.Dataset):
            raise TypeError(f"{what} must be a paddle.io.Dataset or paddle.io.DataLoader, got "
                            f"{type(data).__name__}")
        if isinstance(data, paddle.io.IterableDataset):
            raise TypeError(f"{what} is an IterableDataset, which has no length; wrap it in a "
                            "paddle.io.DataLoader")
        try:
            n = len(data)
        except (TypeError, NotImplementedError):
            raise TypeError(f"{what} ({type(data).__name__}) has no __len__; a map-style "
                            "paddle.io.Dataset needs __len__ and __getitem__") from None
        if n == 0:
            raise ValueError(f"{what} is empty (0 samples)")
        steps = len(distributed.EpochBatchSampler(data, batch_size, drop_last=drop_last))
        if steps == 0:
            raise ValueError(f"{what} has {n} samples, fewer than batch_size={batch_size}: with "
                             "drop_last=True no batch is left (use a smaller batch_size or drop_last=False)")
        return steps

    def _class_labels(self):
        """``(class axis, ignore_index)`` when the loss or a metric reads integer labels as class
        indices (CrossEntropyLoss without soft labels, NLLLoss, cross_entropy, Accuracy), else None."""
        loss = self.loss
        if isinstance(loss, nn.CrossEntropyLoss):
            return None if loss.soft_label else (loss.axis, loss.ignore_index)
        if isinstance(loss, nn.NLLLoss):
            return 1, loss._ignore_index
        if loss is paddle.nn.functional.cross_entropy:
            return -1, -100
        if any(isinstance(m, paddle.metric.Accuracy) for m in self.metrics):
            return -1, None
        return None

    @staticmethod
    def _check_labels(outputs, labels, where, rule):
        """A ``ValueError`` naming the first label outside the network's classes (its output
        width); ``rule`` is :meth:`_class_labels`."""
        out = _as_list(outputs)[0]
        if rule is None or not isinstance(out, (paddle.Tensor, np.ndarray)) or len(out.shape) < 2:
            return
        values = labels.numpy() if isinstance(labels, paddle.Tensor) else labels
        if not isinstance(values, np.ndarray) or values.ndim == 0:
            return
        classes = int(out.shape[rule[0]])
        found = bad_label(values, classes, rule[1])
        if found is None:
            return
        position, value = found
        sample = position // max(values.size // values.shape[0], 1)
        raise ValueError(f"{where.format(sample=sample)}: label {value} is outside the network's "
                         f"{classes} classes (its output width): labels must be 0..{classes - 1}")

    @staticmethod
    def _split(batch, where):
        if not isinstance(batch, (list, tuple)) or len(batch) != 2:
            got = f"{len(batch)} fields" if isinstance(batch, (list, tuple)) else type(batch).__name__
            raise ValueError(f"{where}: each sample must be an (input, label) pair; got {got}")
        return batch[0], batch[1]

    # ------------------------------------------------------------- one step
    def _forward(self, inputs):
        if self.amp:
            with paddle.amp.auto_cast(level=self.amp):
                return self._runner(inputs)
        return self._runner(inputs)

    def _run_network(self, inputs, where):
        """The forward pass; an input the first layer cannot take is a one-line error."""
        try:
            return self._forward(inputs)
        except Exception as exc:  # noqa: BLE001  (re-raised unless the inputs explain it)
            reason = input_mismatch(self.network, inputs)
            if reason is None:
                raise
            raise ValueError(f"{where}: {reason}") from exc

    def _train_step(self, inputs, labels):
        where = (f"Trainer.fit: train_data: epoch {self.epoch + 1}, step {self.step_in_epoch + 1}, "
                 "sample {sample} of the batch")
        outputs = self._run_network(inputs, "Trainer.fit: train_data")
        self._check_labels(outputs, labels, where, self._label_rule)
        try:
            loss = self.loss(outputs, labels)
        except IndexError:  # any loss: out-of-range class indices are the usual cause
            self._check_labels(outputs, labels, where, self._label_rule or (-1, None))
            raise
        if not isinstance(loss, paddle.Tensor) or loss.size != 1:
            raise TypeError(f"Trainer: loss must return a scalar Tensor, got {loss!r:.200}")
        terms = self.callbacks.loss_terms(inputs, outputs, labels)
        total = loss
        for value in terms.values():
            total = total + value
        if self._scaler is not None:
            self._scaler.scale(total).backward()
            self._scaler.step(self.optimizer)
            self._scaler.update()
        else:
            total.backward()
            self.optimizer.step()
        self.optimizer.clear_grad()
        logs = {"loss": total.item()}
        if terms:
            logs["task_loss"] = loss.item()
            logs.update({name: value.item() for name, value in terms.items()})
        self._update_metrics(outputs, labels)
        return logs

    def _update_metrics(self, outputs, labels):
        if not self.metrics:
            return
        pred = _as_list(outputs)[0].detach()
        for m in self.metrics:
            m.update(*_as_list(m.compute(pred, labels)))

    def _metric_logs(self):
        logs = {}
        for m in self.metrics:
            values = _as_list(m.accumulate())
            logs.update({n: float(v) for n, v in zip(_metric_names(m), values)})
        return logs

    # ------------------------------------------------------------------- fit
    def fit(self, train_data, eval_data=None, epochs=1, batch_size=64, callbacks=None,
            save_dir=None, resume=False, shuffle=True, seed=None, verbose=1, num_workers=0,
            eval_freq=1, drop_last=False):
        """Train for ``epochs`` epochs; returns the history ``{name: [value per epoch]}``.

        With ``save_dir`` the last (and best) checkpoints are written there; with
        ``resume=True`` training continues from ``save_dir/last.pdckpt`` if it exists.
        ``seed`` seeds Paddle, numpy and random before training starts.

        Everything is checked before anything is trained or written: the arguments, that
        ``train_data`` and ``eval_data`` hold at least one batch, and that ``save_dir`` is a
        writable folder (temporary files an interrupted save left there are removed). A
        NaN or infinite loss stops training and raises :class:`NonFiniteLossError` unless
        ``callbacks`` hold a :class:`NaNGuard` of another action; checkpoints keep the last
        finite state.
        """
        if self.optimizer is None or self.loss is None:
            raise ValueError("Trainer.fit needs an optimizer and a loss (given to Trainer(...))")
        for name, value in (("epochs", epochs), ("batch_size", batch_size), ("eval_freq", eval_freq)):
            if not _positive_int(value):
                raise ValueError(f"Trainer.fit: {name} must be a positive integer, got {value!r}")
        for name, value in (("resume", resume), ("shuffle", shuffle), ("drop_last", drop_last)):
            if not _is_bool(value):
                raise TypeError(f"Trainer.fit: {name} must be True or False, got {value!r}")
        if seed is not None and (not isinstance(seed, numbers.Integral) or _is_bool(seed)
                                 or not 0 <= seed < 2**32):
            raise ValueError(f"Trainer.fit: seed must be None or an integer in [0, 2**32), got {seed!r}")
        if verbose not in (0, 1, 2) or (not _is_bool(verbose) and not isinstance(verbose, numbers.Integral)):
            raise ValueError(f"Trainer.fit: verbose must be 0, 1 or 2, got {verbose!r}")
        if not isinstance(num_workers, numbers.Integral) or _is_bool(num_workers) or num_workers < 0:
            raise ValueError(f"Trainer.fit: num_workers must be an integer >= 0, got {num_workers!r}")
        if resume and save_dir is None:
            raise ValueError("Trainer.fit: resume=True needs save_dir (where checkpoints are)")
        if callbacks is not None and not isinstance(callbacks, (list, tuple, paddle.callbacks.Callback)):
            raise TypeError(f"Trainer.fit: callbacks must be a list of callbacks, got {type(callbacks).__name__}")
        steps = self._count_batches(train_data, batch_size, drop_last, "Trainer.fit: train_data")
        if eval_data is not None:
            self._count_batches(eval_data, batch_size, False, "Trainer.fit: eval_data")
        if save_dir is not None:
            if isinstance(save_dir, bool) or not isinstance(save_dir, (str, os.PathLike)):
                raise TypeError(f"Trainer.fit: save_dir must be a folder path (str), got {save_dir!r}")
            save_dir = os.fspath(save_dir)
            if self.is_main_process:
                prepare_folder(save_dir, "Trainer.fit: save_dir")
        if seed is not None:
            paddle.seed(seed)
            np.random.seed(seed)
            random.seed(seed)
        self.eval_data = eval_data
        cbs = _as_list(callbacks) if callbacks is not None else []
        if verbose and not any(isinstance(c, ProgressBar) for c in cbs):
            cbs.insert(0, ProgressBar(verbose=verbose))
        if isinstance(self.optimizer._learning_rate, paddle.optimizer.lr.LRScheduler) and \
                not any(isinstance(c, LRSchedulerStep) for c in cbs):
            cbs.append(LRSchedulerStep())
        if save_dir is not None and not any(isinstance(c, ModelCheckpoint) for c in cbs):
            cbs.append(ModelCheckpoint(save_dir))
        guards = [c for c in cbs if isinstance(c, NaNGuard)]
        if not guards:
            guards = [NaNGuard("raise")]
            cbs.append(guards[0])
        # checkpoints go last so that they see every other callback's state for this step
        cbs = [c for c in cbs if not isinstance(c, ModelCheckpoint)] + \
              [c for c in cbs if isinstance(c, ModelCheckpoint)]
        self.callbacks = CallbackList(cbs)
        self.callbacks.set_model(self)
        self.epoch, self.step_in_epoch, self.global_step = 0, 0, 0
        self.stop_training = False
        self.history = {}
        self._scalars = {}
        self._label_rule = self._class_labels()
        if resume and os.path.exists(os.path.join(save_dir, LAST_CHECKPOINT)):
            self._restore(os.path.join(save_dir, LAST_CHECKPOINT), strict=True)
        self.callbacks.set_params({
            "batch_size": batch_size, "epochs": epochs, "steps": steps, "verbose": verbose,
            "metrics": ["loss"] + [n for m in self.metrics for n in _metric_names(m)],
            "save_dir": save_dir,
        })
        self.callbacks.call("on_train_begin", {})
        logs = {}
        stopped = None
        while self.epoch < epochs and not self.stop_training:
            logs = self._train_epoch(train_data, batch_size, shuffle, num_workers, drop_last)
            stopped = next((g for g in guards if g.fired), None)
            if stopped is not None:  # an unfinished epoch: neither evaluated nor ended
                for name, value in logs.items():
                    self.history.setdefault(name, []).append(value)
                break
            if eval_data is not None and ((self.epoch + 1) % eval_freq == 0 or self.epoch + 1 == epochs):
                eval_logs = self.evaluate(eval_data, batch_size, num_workers=num_workers, _in_fit=True)
                logs.update({f"eval_{k}": v for k, v in eval_logs.items()})
            for name, value in logs.items():
                self.history.setdefault(name, []).append(value)
            self.epoch += 1
            self.step_in_epoch = 0
            self.callbacks.call("on_epoch_end", self.epoch - 1, logs)
        self.callbacks.call("on_train_end", logs)
        if stopped is not None and stopped.action == "raise":
            raise NonFiniteLossError(self._nonfinite_message(stopped.message))
        return self.history

    def _nonfinite_message(self, message):
        message = message.replace("NaNGuard: ", "Trainer.fit: ", 1)
        for cb in self.callbacks:
            if isinstance(cb, ModelCheckpoint):
                last = os.path.join(cb.save_dir, LAST_CHECKPOINT)
                if cb.last_saved:
                    message += f"; {last} keeps the last finite state (global step {cb.last_saved[2]})"
                elif os.path.exists(last):
                    message += f"; {last} keeps its earlier state"
                else:
                    message += "; no checkpoint was written"
                break
        return message + " (callbacks=[NaNGuard('warn')] trains on)"

    def _train_epoch(self, train_data, batch_size, shuffle, num_workers, drop_last):
        self.network.train()
        for m in self.metrics:
            m.reset()
        self.callbacks.call("on_epoch_begin", self.epoch, {})
        if hasattr(train_data, "set_epoch"):  # epoch-seeded augmentation (slimhub.data.ArrayDataset)
            train_data.set_epoch(self.epoch)
        loader, discard = self._loader(train_data, batch_size, shuffle, epoch=self.epoch,
                                       skip=self.step_in_epoch, num_workers=num_workers,
                                       drop_last=drop_last)
        logs = {}
        sums, count = {}, 0
        start = time.perf_counter()
        for batch in loader:
            if discard:  # a user DataLoader cannot start mid-epoch: skip what was trained
                discard -= 1
                continue
            step = self.step_in_epoch
            self.callbacks.call("on_train_batch_begin", step, {})
            inputs, labels = self._split(batch, "train_data")
            step_logs = self._train_step(inputs, labels)
            for k, v in step_logs.items():
                sums[k] = sums.get(k, 0.0) + v
            count += 1
            self.step_in_epoch += 1
            self.global_step += 1
            logs = {k: v / count for k, v in sums.items()}
            logs.update(self._metric_logs())
            logs.update(self._scalars)
            logs["step_loss"] = step_logs["loss"]
            logs["lr"] = self.optimizer.get_lr()
            logs["batch_size"] = int(inputs.shape[0])
            self.callbacks.call("on_train_batch_end", step, logs)
            if self.stop_training:
                break
        if count == 0 and self.step_in_epoch == 0:
            raise ValueError(f"Trainer.fit: train_data yielded no batches in epoch {self.epoch + 1}")
        logs = {k: v for k, v in logs.items() if k not in ("step_loss", "batch_size")}
        logs = distributed.mean_over_ranks(logs)
        distributed.broadcast_buffers(self.network)
        logs["epoch_time"] = time.perf_counter() - start
        return logs

    # ---------------------------------------------------------- eval/predict
    def _outputs(self, data, batch_size, num_workers, with_labels, where):
        """Run the network over ``data`` in eval mode; returns (outputs, labels) numpy arrays."""
        if not _positive_int(batch_size):
            raise ValueError(f"{where}: batch_size must be a positive integer, got {batch_size!r}")
        if not isinstance(num_workers, numbers.Integral) or _is_bool(num_workers) or num_workers < 0:
            raise ValueError(f"{where}: num_workers must be an integer >= 0, got {num_workers!r}")
        if isinstance(data, paddle.io.DataLoader):
            loader = data
        else:
            self._count_batches(data, batch_size, False, where)
            loader = paddle.io.DataLoader(distributed.shard(data), batch_size=batch_size,
                                          shuffle=False, num_workers=num_workers)
        was_training = self.network.training
        self.network.eval()
        outs, labels = [], []
        try:
            with paddle.no_grad():
                for batch in loader:
                    if with_labels:
                        x, y = self._split(batch, where)
                        labels.append(y.numpy())
                    else:
                        x = batch[0] if isinstance(batch, (list, tuple)) else batch
                    outs.append(_as_list(self._run_network(x, where))[0].astype("float32").numpy())
        finally:
            if was_training:
                self.network.train()
        if not outs:
            raise ValueError(f"{where} yielded no batches")
        n = len(data) if not isinstance(data, paddle.io.DataLoader) else None
        outputs = distributed.gather(np.concatenate(outs), n)
        labels = distributed.gather(np.concatenate(labels), n) if with_labels else None
        return outputs, labels

    def evaluate(self, eval_data, batch_size=64, num_workers=0, _in_fit=False):
        """Loss and metrics over ``eval_data``: ``{"loss": .., "acc_top1": .., ...}``.

        Labels outside the network's classes are an error; a NaN or infinite result is
        returned with a warning."""
        if self.loss is None and not self.metrics:
            raise ValueError("Trainer.evaluate needs a loss or metrics (given to Trainer(...))")
        callbacks = self.callbacks if _in_fit else CallbackList([])
        callbacks.call("on_eval_begin", {})
        outputs, labels = self._outputs(eval_data, batch_size, num_workers, True, "Trainer.evaluate: eval_data")
        self._check_labels(outputs, labels, "Trainer.evaluate: eval_data sample {sample}", self._class_labels())
        logs = {}
        out_t, lab_t = paddle.to_tensor(outputs), paddle.to_tensor(labels)
        if self.loss is not None:
            logs["loss"] = self.loss(out_t, lab_t).item()
        for m in self.metrics:
            m.reset()
            m.update(*_as_list(m.compute(out_t, lab_t)))
        logs.update(self._metric_logs())
        for m in self.metrics:
            m.reset()
        odd = sorted(k for k, v in logs.items() if not np.isfinite(v))
        if odd:
            state = nonfinite_state(self.network)
            cause = (f"the network's {state} is not finite" if state else
                     "the weights are finite, so eval_data holds NaN or infinite inputs or the network "
                     "overflows on them")
            warnings.warn(f"Trainer.evaluate: {', '.join(f'{k}={logs[k]}' for k in odd)} over eval_data; "
                          f"{cause}", stacklevel=2)
        callbacks.call("on_eval_end", logs)
        return logs

    def predict(self, data, batch_size=64, num_workers=0):
        """The network's (first) output for every sample, as one numpy array."""
        return self._outputs(data, batch_size, num_workers, False, "Trainer.predict: data")[0]

    # ------------------------------------------------------ state and export
    def state_dict(self):
        return {
            "network": self.network.state_dict(),
            "optimizer": optimizer_state(self.optimizer, self.network) if self.optimizer else None,
            "callbacks": self.callbacks.state_dict(),
            "epoch": self.epoch, "step_in_epoch": self.step_in_epoch,
            "global_step": self.global_step, "history": self.history,
            "rng": {"paddle": paddle.get_rng_state(), "numpy": np.random.get_state(),
                    "python": random.getstate()},
        }

    def save(self, path):
        """Write the whole training state to ``path`` atomically (rank 0 only)."""
        if self.is_main_process:
            atomic_save(self.state_dict(), path)

    def load(self, path, callbacks=None):
        """Restore a state written by :meth:`save` or by ``fit(save_dir=...)``.

        ``callbacks`` (optional) become the trainer's callbacks first: pass the compression
        callbacks that trained the checkpoint (PruneCallback, QATCallback, DistillCallback
        with the same settings), which re-apply their changes before the weights load.
        States of callbacks that are not given (ModelCheckpoint's best value,
        EarlyStopping's counter) are left unused."""
        if callbacks is not None:
            self.callbacks = CallbackList(_as_list(callbacks))
            self.callbacks.set_model(self)
        self._restore(path, strict=False)

    def _restore(self, path, strict):
        """:meth:`load`; ``strict``: every callback state in the file needs its callback (resume)."""
        state = load_checkpoint(path)
        unused = self.callbacks.set_state_dict(state["callbacks"], path, strict=strict)
        if self.optimizer is not None:
            rebind_optimizer(self.optimizer, self.network)
        self._build_runner()
        fill_in_grids(self.network, state["network"])
        own = self.network.state_dict()
        bad = [k for k, v in state["network"].items()
               if k not in own or list(own[k].shape) != list(v.shape)]
        missing = [k for k in own if k not in state["network"]]
        if bad or missing:
            raise ValueError(
                f"{path}: checkpoint does not fit this network: "
                f"{'unexpected or reshaped ' + str(bad[:5]) if bad else ''} "
                f"{'missing ' + str(missing[:5]) if missing else ''}; was it saved with other "
                "compression callbacks (pruning, quantization)? Pass the same callbacks"
                + (f" (it holds state of {unused})" if unused else "") + ".")
        self.network.set_state_dict(state["network"])
        if self.optimizer is not None and state["optimizer"] is not None:
            load_optimizer_state(self.optimizer, self.network, state["optimizer"], path)
        self.epoch, self.step_in_epoch = state["epoch"], state["step_in_epoch"]
        self.global_step, self.history = state["global_step"], state["history"]
        paddle.set_rng_state(state["rng"]["paddle"])
        np.random.set_state(state["rng"]["numpy"])
        random.setstate(state["rng"]["python"])

    def export(self, path, input_spec, format="inference", samples=None, on_mismatch="raise"):
        """Write a deployable model; ``format`` names an exporter, ``samples`` and
        ``on_mismatch`` control the check of the written file (see slimhub.export.export)."""
        if self.is_main_process:
            files = export_model(self.network, path, input_spec, format=format, samples=samples,
                                 on_mismatch=on_mismatch)
            return files + self.callbacks.export_files(path)
        return None
