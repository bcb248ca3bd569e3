"""Keep an optimizer bound to a network whose parameters were replaced or added, and its
state (with its learning-rate scheduler's) across processes."""
from __future__ import annotations

import paddle


def lr_scheduler(optimizer):
    """The LRScheduler that sets ``optimizer``'s learning rate, or None (a fixed rate, or no
    optimizer). Paddle 3.3.1 keeps it only in the private ``_learning_rate``."""
    lr = getattr(optimizer, "_learning_rate", None)
    return lr if isinstance(lr, paddle.optimizer.lr.LRScheduler) else None


def rebind_optimizer(optimizer, network):
    """Point ``optimizer`` at ``network.parameters()`` and drop state of removed ones.

    Compression replaces a reshaped parameter by a new Parameter (a new name), so the
    accumulators (momentum, Adam moments) of parameters still present are kept, those
    of replaced parameters are dropped, and new parameters start with fresh state.
    Parameter groups are not supported: the optimizer must hold a flat list.
    """
    if optimizer._parameter_list and isinstance(optimizer._parameter_list[0], dict):
        raise ValueError(
            "optimizer uses parameter groups; slimhub can only rebind an optimizer "
            "built with a flat parameter list after pruning or quantization")
    params = [p for p in network.parameters() if not p.stop_gradient]
    names = {p.name for p in params}
    optimizer._parameter_list = params
    optimizer._param_groups = params
    for per_param in optimizer._accumulators.values():
        for name in [n for n in per_param if n not in names]:
            del per_param[name]
    optimizer._already_create_accumulator &= names
    for name in [n for n in optimizer._master_weights if n not in names]:
        del optimizer._master_weights[name]


def optimizer_state(optimizer, network):
    """The optimizer's state keyed by the network's structured parameter names.

    Paddle keys optimizer state by per-process parameter names (``linear_3.w_0``),
    which differ between processes and after layers are replaced; structured names
    (``features.0.weight``) do not.
    """
    key_of = {p.name: key for key, p in network.named_parameters()}
    accumulators = {
        kind: {key_of[name]: var.numpy() for name, var in per_param.items() if name in key_of}
        for kind, per_param in optimizer._accumulators.items()}
    state = {"accumulators": accumulators}
    scheduler = lr_scheduler(optimizer)
    if scheduler is not None:
        state["lr_scheduler"] = scheduler.state_dict()
    return state


def load_optimizer_state(optimizer, network, state, source):
    """Restore :func:`optimizer_state` into ``optimizer`` bound to ``network``."""
    params = dict(network.named_parameters())
    trainable = [p for p in params.values() if not p.stop_gradient]
    block = paddle.static.default_main_program().global_block()
    optimizer._create_accumulators(block, trainable)
    for kind, per_key in state["accumulators"].items():
        for key, value in per_key.items():
            param = params.get(key)
            var = optimizer._accumulators.get(kind, {}).get(param.name) if param is not None else None
            if var is None or list(var.shape) != list(value.shape):
                raise ValueError(
                    f"{source}: optimizer state {kind!r} of parameter {key!r} "
                    f"(shape {list(value.shape)}) does not fit this optimizer and network; "
                    "was it saved with another optimizer or other compression callbacks?")
            var.set_value(value)
    if "lr_scheduler" in state:
        lr_scheduler(optimizer).set_state_dict(state["lr_scheduler"])
