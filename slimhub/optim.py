"""Keep an optimizer bound to a network whose parameters were replaced or added."""
from __future__ import annotations


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
