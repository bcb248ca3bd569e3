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

from slimhub import distributed, validate
from slimhub.callbacks.callback_list import CallbackList
from slimhub.callbacks.defaults import config_callbacks
from slimhub.checkpoint import LAST_CHECKPOINT, atomic_save, load_checkpoint, prepare_folder, set_fitting_state
from slimhub.export import export as export_model
from slimhub.modes import eval_mode
from slimhub.optim import load_optimizer_state, optimizer_state, rebind_optimizer
from slimhub.quant.wrap import fill_in_grids


def _metric_names(metric):
    names = metric.name()
    return list(names) if isinstance(names, (list, tuple)) else [names]


def _as_list(x):
    return list(x) if isinstance(x, (list, tuple)) else [x]


class Trainer:
    """Train, evaluate, predict, checkpoint and export a ``paddle.nn.Layer``.

    ``static=True`` runs the network through ``paddle.jit.to_static``. ``amp`` is
    ``False``, ``"O1"`` or ``"O2"`` (``paddle.amp``; GPU only, ignored with a warning on CPU).
    """

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
        if amp not in (False, None, "O1", "O2"):
            raise ValueError(f"Trainer: amp must be False, 'O1' or 'O2', got {amp!r}")
        if optimizer is not None:
            validate.optimizer_of(optimizer, model)
        self.network = model
        self.optimizer = optimizer
        self.loss = loss
        self.metrics = metrics
        self.static = validate.boolean(static, "Trainer: static")
        self.amp = amp if amp and paddle.is_compiled_with_cuda() and "gpu" in paddle.get_device() else False
        if amp and not self.amp:
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
        self._label_rule = None  # see validate.label_rule
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
        sampler = distributed.EpochBatchSampler(
            data, batch_size, shuffle=shuffle, epoch=epoch, skip=skip, drop_last=drop_last)
        return paddle.io.DataLoader(data, batch_sampler=sampler, num_workers=num_workers), 0

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
        """The forward pass; inputs the first layer cannot take are a one-line error."""
        try:
            return self._forward(inputs)
        except Exception:  # noqa: BLE001  (re-raised unless the inputs explain it)
            reason = validate.input_mismatch(self.network, inputs)
            if reason is None:
                raise
            raise ValueError(f"{where}: {reason}") from None

    def _train_step(self, inputs, labels):
        where = (f"Trainer.fit: train_data: epoch {self.epoch + 1}, step {self.step_in_epoch + 1}, "
                 "sample {sample} of the batch")
        outputs = self._run_network(inputs, "Trainer.fit: train_data")
        validate.check_labels(outputs, labels, self._label_rule, where)
        try:
            loss = self.loss(outputs, labels)
        except IndexError:  # a loss the rule does not know: out-of-range class indices are the usual cause
            validate.check_labels(outputs, labels, (-1, None), where)
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

        The arguments, that ``train_data`` and ``eval_data`` hold a batch, and that
        ``save_dir`` is a writable folder are checked before anything is trained or
        written (temporary files that an interrupted save left there are removed). A NaN
        or infinite loss stops training with ``slimhub.callbacks.NonFiniteLossError``
        naming the epoch and step, unless ``callbacks`` hold a ``NaNGuard`` of another
        action; the epoch it cuts short is neither evaluated nor ended, and checkpoints
        keep the last finite state, from which ``resume=True`` continues.
        """
        steps = self._check_fit(train_data, eval_data, epochs, batch_size, callbacks, save_dir, resume,
                                shuffle, seed, verbose, num_workers, eval_freq, drop_last)
        if seed is not None:
            paddle.seed(seed)
            np.random.seed(seed)
            random.seed(seed)
        self.eval_data = eval_data
        given = _as_list(callbacks) if callbacks is not None else []
        self.callbacks = CallbackList(config_callbacks(given, self.optimizer, save_dir, verbose))
        self.callbacks.set_model(self)
        self.epoch, self.step_in_epoch, self.global_step = 0, 0, 0
        self.stop_training = False
        self.history = {}
        self._scalars = {}
        self._label_rule = validate.label_rule(self.loss, self.metrics)
        if resume and os.path.exists(os.path.join(save_dir, LAST_CHECKPOINT)):
            self._restore(os.path.join(save_dir, LAST_CHECKPOINT), strict=True)
        self.callbacks.set_params({
            "batch_size": batch_size, "epochs": epochs, "steps": steps, "verbose": verbose,
            "metrics": ["loss"] + [n for m in self.metrics for n in _metric_names(m)],
            "save_dir": save_dir,
        })
        self.callbacks.call("on_train_begin", {})
        logs = {}
        while self.epoch < epochs and not self.stop_training:
            logs = self._train_epoch(train_data, batch_size, shuffle, num_workers, drop_last)
            if self.stop_training:  # stopped during the epoch: neither evaluated nor ended
                self._record(logs)
                break
            if eval_data is not None and ((self.epoch + 1) % eval_freq == 0 or self.epoch + 1 == epochs):
                eval_logs = self.evaluate(eval_data, batch_size, num_workers=num_workers, _in_fit=True)
                logs.update({f"eval_{k}": v for k, v in eval_logs.items()})
            self._record(logs)
            self.epoch += 1
            self.step_in_epoch = 0
            self.callbacks.call("on_epoch_end", self.epoch - 1, logs)
        self.callbacks.call("on_train_end", logs)
        return self.history

    def _check_fit(self, train_data, eval_data, epochs, batch_size, callbacks, save_dir, resume,
                   shuffle, seed, verbose, num_workers, eval_freq, drop_last):
        """Check :meth:`fit`'s arguments and prepare ``save_dir``; returns the steps per epoch."""
        if self.optimizer is None or self.loss is None:
            raise ValueError("Trainer.fit needs an optimizer and a loss (given to Trainer(...))")
        for name, value in (("epochs", epochs), ("batch_size", batch_size), ("eval_freq", eval_freq)):
            validate.integer(value, f"Trainer.fit: {name}")
        for name, value in (("resume", resume), ("shuffle", shuffle), ("drop_last", drop_last)):
            validate.boolean(value, f"Trainer.fit: {name}")
        if seed is not None:
            validate.integer(seed, "Trainer.fit: seed", 0, 2**32 - 1)
        if verbose not in (0, 1, 2) or not isinstance(verbose, numbers.Integral):
            raise ValueError(f"Trainer.fit: verbose must be 0, 1 or 2, got {verbose!r}")
        validate.integer(num_workers, "Trainer.fit: num_workers", 0)
        if callbacks is not None and not isinstance(callbacks, (list, tuple, paddle.callbacks.Callback)):
            raise TypeError(f"Trainer.fit: callbacks must be a list of callbacks, got {type(callbacks).__name__}")
        if resume and save_dir is None:
            raise ValueError("Trainer.fit: resume=True needs save_dir (where checkpoints are)")
        steps = validate.count_batches(train_data, batch_size, drop_last, "Trainer.fit: train_data")
        if eval_data is not None:
            validate.count_batches(eval_data, batch_size, False, "Trainer.fit: eval_data")
        if save_dir is not None:
            validate.folder(save_dir, "Trainer.fit: save_dir")
            if self.is_main_process:
                prepare_folder(save_dir, "Trainer.fit: save_dir")
        return steps

    def _record(self, logs):
        for name, value in logs.items():
            self.history.setdefault(name, []).append(value)

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
            inputs, labels = self._split(batch, "Trainer.fit: train_data")
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
    def _outputs(self, data, batch_size, num_workers, with_labels, method, name):
        """Run the network over ``data`` in eval mode; returns (outputs, labels) numpy arrays.
        ``method: name`` starts the errors about the data."""
        where = f"{method}: {name}"
        validate.integer(batch_size, f"{method}: batch_size")
        validate.integer(num_workers, f"{method}: num_workers", 0)
        validate.count_batches(data, batch_size, False, where)
        if isinstance(data, paddle.io.DataLoader):
            loader = data
        else:
            loader = paddle.io.DataLoader(distributed.shard(data), batch_size=batch_size,
                                          shuffle=False, num_workers=num_workers)
        outs, labels = [], []
        with eval_mode(self.network), paddle.no_grad():
            for batch in loader:
                if with_labels:
                    x, y = self._split(batch, where)
                    labels.append(y.numpy())
                else:
                    x = batch[0] if isinstance(batch, (list, tuple)) else batch
                outs.append(_as_list(self._run_network(x, where))[0].astype("float32").numpy())
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
        outputs, labels = self._outputs(eval_data, batch_size, num_workers, True, "Trainer.evaluate", "eval_data")
        validate.check_labels(outputs, labels, validate.label_rule(self.loss, self.metrics),
                              "Trainer.evaluate: eval_data sample {sample}")
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
            state = validate.nonfinite_state(self.network)
            cause = (f"the network's {state} is not finite" if state else
                     "the weights are finite, so eval_data holds NaN or infinite inputs or the network "
                     "overflows on them")
            warnings.warn(f"Trainer.evaluate: {', '.join(f'{k}={logs[k]}' for k in odd)} over eval_data; "
                          f"{cause}", stacklevel=2)
        callbacks.call("on_eval_end", logs)
        return logs

    def predict(self, data, batch_size=64, num_workers=0):
        """The network's (first) output for every sample, as one numpy array."""
        return self._outputs(data, batch_size, num_workers, False, "Trainer.predict", "data")[0]

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
        set_fitting_state(self.network, state["network"], f"{path}: the checkpoint's weights",
                          "was it saved with other compression callbacks (pruning, quantization)? Pass the "
                          "same callbacks" + (f" (it holds state of {unused})" if unused else ""))
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
