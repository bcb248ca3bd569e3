"""PruneCallback: structured filter pruning during training (see slimhub.prune)."""
from __future__ import annotations

import os

from slimhub import validate
from slimhub.callbacks.base import Callback, check_same_settings
from slimhub.rules import (MAX_EPOCHS, NAMES, SHAPE, STRING, ArgumentError, StrategyContract, choice, integer,
                           nullable)
from slimhub.flops import flops
from slimhub.prune.criteria import CRITERIA, get_criterion
from slimhub.prune.graph import DEFAULT_ROUND_TO, PRUNED_FLOPS, ROUND_TO
from slimhub.prune.pruner import apply_plan, compose_plans, empty_plan, save_plan
from slimhub.prune.sensitivity import prune_sensitive, scan_sensitivity
from slimhub.prune.uniform import prune_uniform

METHODS = ("uniform", "sensitive")
PLAN_FILE = "prune_plan.json"
SENSITIVITY_FILE = "sensitivity.json"


def pruning_epochs(start_epoch, end_epoch, steps):
    """The epochs at whose start the ``steps`` pruning steps run: ``start_epoch``, and with
    more steps, epochs spread evenly up to ``end_epoch``; an :class:`ArgumentError` when
    they do not fit (one step per epoch at most)."""
    if steps > 1 and end_epoch is None:
        raise ArgumentError("steps", steps, f"{steps} pruning steps need end_epoch (the epoch of the last "
                            f"step, at least start_epoch + {steps - 1}: one step per epoch at most)")
    if steps > 1 and end_epoch < start_epoch + steps - 1:
        raise ArgumentError("end_epoch", end_epoch, f"{steps} pruning steps from epoch {start_epoch} need "
                            f"end_epoch >= {start_epoch + steps - 1} (one step per epoch at most)")
    if steps == 1 and end_epoch is not None and end_epoch < start_epoch:
        raise ArgumentError("end_epoch", end_epoch,
                            f"pruning at epoch {start_epoch} (start_epoch) cannot end before it")
    last = start_epoch if steps == 1 else end_epoch
    return [int(start_epoch + round(i * (last - start_epoch) / max(steps - 1, 1))) for i in range(steps)]


def _pruning_window(args, epochs):
    """The first and the last pruning step's epochs."""
    steps = pruning_epochs(args["start_epoch"], args["end_epoch"], args["steps"])
    return steps[0], steps[-1]


class PruneCallback(Callback):
    """Remove ``pruned_flops`` of the network's MACs (0.5: half) by filter pruning.

    With ``steps=1`` the network is pruned once at the start of ``start_epoch``;
    with ``steps=n`` it is pruned gradually, an equal share of the target at ``n``
    epochs spread from ``start_epoch`` to ``end_epoch``, training in between.
    ``method`` "uniform" prunes every group by the same ratio; "sensitive" scans
    each group's sensitivity once (``eval_fn(network) -> float``, higher is better;
    by default the first metric of ``trainer.evaluate`` on the fit's eval data) and
    prunes insensitive groups more. ``include`` / ``exclude`` are glob patterns of the
    layers whose output channels may be pruned. Every group keeps a multiple of
    ``round_to`` channels (or all of them; 1: no rounding). ``input_shape`` is one
    input's shape, e.g. ``(3, 32, 32)``.

    The plan (kept channels per layer, relative to the unpruned network) is kept in
    the callback's state, so resuming from a checkpoint re-applies it before the
    weights load; with a ``save_dir`` it is also written to ``save_dir/prune_plan.json``
    for :func:`slimhub.prune.load_pruned`; :attr:`pruning_plan` reads it.
    """

    contract = StrategyContract({
        "pruned_flops": PRUNED_FLOPS, "method": choice(METHODS), "criterion": choice(CRITERIA),
        "steps": integer(1, MAX_EPOCHS), "include": nullable(NAMES), "exclude": nullable(NAMES),
        "input_shape": nullable(SHAPE), "sensitivity_cache": nullable(STRING), "round_to": ROUND_TO,
    }, window=_pruning_window, python_only=("eval_fn",))

    def __init__(self, pruned_flops=0.5, method="uniform", criterion="l1_norm", start_epoch=0,
                 end_epoch=None, steps=1, include=None, exclude=None, input_shape=None,
                 eval_fn=None, sensitivity_cache=None, round_to=DEFAULT_ROUND_TO):
        super().__init__()
        self.contract.check("PruneCallback", pruned_flops=pruned_flops, method=method, steps=steps,
                            start_epoch=start_epoch, end_epoch=end_epoch, round_to=round_to)
        get_criterion(criterion)
        if input_shape is None:
            raise ValueError("PruneCallback: input_shape is required, e.g. (3, 32, 32)")
        input_shape = validate.input_shape(input_shape, "PruneCallback")
        if eval_fn is not None and not callable(eval_fn):
            raise TypeError(f"PruneCallback: eval_fn must be callable(network) -> float, got {eval_fn!r}")
        self.pruned_flops = float(pruned_flops)
        self.method = method
        self.criterion = criterion
        self.steps = int(steps)
        self.include, self.exclude = include, exclude
        self.input_shape = tuple(input_shape)
        self.eval_fn = eval_fn
        self.sensitivity_cache = sensitivity_cache
        self.round_to = int(round_to)
        self.schedule = pruning_epochs(start_epoch, end_epoch, steps)
        self._plan = empty_plan()
        self.done_steps = 0
        self.base_flops = None
        self.sensitivity = None

    # ----------------------------------------------------------------- state
    @property
    def pruning_plan(self):
        """The plan of the pruning done so far (kept channels per layer of the unpruned
        network, as :func:`slimhub.prune.load_pruned` reads it), or None while nothing is pruned."""
        return self._plan if self._plan["layers"] else None

    def settings(self):
        """The arguments that decide what is pruned and when; checkpoints record them."""
        def names(v):
            return None if v is None else ([v] if isinstance(v, str) else list(v))
        return {"pruned_flops": self.pruned_flops, "method": self.method, "criterion": self.criterion,
                "steps": self.steps, "schedule": list(self.schedule), "include": names(self.include),
                "exclude": names(self.exclude), "input_shape": list(self.input_shape),
                "round_to": self.round_to}

    def state_dict(self):
        return {"plan": self._plan, "done_steps": self.done_steps, "base_flops": self.base_flops,
                "sensitivity": self.sensitivity, "settings": self.settings()}

    def set_state_dict(self, state):
        if "settings" in state:  # checkpoints written before settings were kept have none
            check_same_settings("PruneCallback", state["settings"], self.settings())
        self._plan = state["plan"]
        self.done_steps = state["done_steps"]
        self.base_flops = state["base_flops"]
        self.sensitivity = state["sensitivity"]
        if self._plan["layers"]:  # the trainer rebinds the optimizer after this
            apply_plan(self.network, self._plan, source="checkpoint pruning plan")

    # ----------------------------------------------------------------- hooks
    def on_export(self, path):
        """The plan beside the exported model: ``path_prune_plan.json`` (a ``path.NAME.json``
        would be read by ``paddle.jit.load`` as a program named NAME)."""
        if not self._plan["layers"]:
            return []
        target = f"{path}_{PLAN_FILE}"
        save_plan(self._plan, target)
        return [target]

    def on_train_begin(self, logs=None):
        self._log_size()

    def on_epoch_begin(self, epoch, logs=None):
        while self.done_steps < self.steps and self.schedule[self.done_steps] <= epoch:
            self._prune_step()

    # ------------------------------------------------------------------ work
    def _save_dir(self):
        return (self.params or {}).get("save_dir")

    def _log_size(self):
        size = flops(self.network, self.input_shape)
        self.log("flops", size["flops"])
        self.log("params", size["params"])
        return size["flops"]

    def _default_eval_fn(self):
        """Score a network with the trainer's loss and metrics on the fit's eval data."""
        trainer = self.model
        if getattr(trainer, "eval_data", None) is None:
            raise ValueError("PruneCallback(method='sensitive') needs eval_fn, or eval_data given to fit")
        batch_size = (self.params or {}).get("batch_size") or 64

        def eval_fn(network):
            scorer = type(trainer)(network, loss=trainer.loss, metrics=trainer.metrics)
            logs = scorer.evaluate(trainer.eval_data, batch_size)
            metrics = [k for k in logs if k != "loss"]
            return logs[metrics[0]] if metrics else -logs["loss"]
        return eval_fn

    def _scan(self):
        cache = self.sensitivity_cache
        if cache is None and self._save_dir():
            cache = os.path.join(self._save_dir(), SENSITIVITY_FILE)
        return scan_sensitivity(self.network, self.input_shape, self.eval_fn or self._default_eval_fn(),
                                criterion=self.criterion, cache_path=cache,
                                include=self.include, exclude=self.exclude)

    def _prune_step(self):
        current = flops(self.network, self.input_shape)["flops"]
        if self.base_flops is None:
            self.base_flops = current
        self.done_steps += 1
        goal = self.base_flops * (1 - self.pruned_flops * self.done_steps / self.steps)
        fraction = 1 - goal / current
        if fraction > 0:
            scope = {"include": self.include, "exclude": self.exclude, "round_to": self.round_to}
            if self.method == "uniform":
                plan = prune_uniform(self.network, self.input_shape, pruned_flops=fraction,
                                     criterion=self.criterion, **scope)
            else:
                if self.sensitivity is None:
                    self.sensitivity = self._scan()
                plan = prune_sensitive(self.network, self.input_shape, self.sensitivity, fraction,
                                       criterion=self.criterion, **scope)
            self._plan = compose_plans(self._plan, plan)
            self.structure_changed()
            if self._save_dir():
                save_plan(self._plan, os.path.join(self._save_dir(), PLAN_FILE))
        self._log_size()
