"""Structured filter pruning: trace, rank, remove channels, and rebuild from a plan."""
from slimhub.prune.criteria import CRITERIA, fpgm, get_criterion, l1_norm, l2_norm, select_kept
from slimhub.prune.graph import Group, PruneGraph, build_graph
from slimhub.prune.layers import (OUTPUT_CHANNELS, Coupling, LayerEntry, Macs, UnsupportedInput,
                                  register_layer, replace_parameter)
from slimhub.prune.pruner import (apply_plan, compose_plans, load_plan, load_pruned, make_plan,
                                  save_plan)
from slimhub.prune.sensitivity import (load_sensitivity, plot_sensitivity, prune_sensitive,
                                       scan_sensitivity, sensitive_order)
from slimhub.prune.spaces import Member
from slimhub.prune.uniform import prune_uniform, uniform_order, uniform_removal

__all__ = [
    "CRITERIA", "OUTPUT_CHANNELS", "Coupling", "Group", "LayerEntry", "Macs", "Member",
    "PruneGraph", "UnsupportedInput", "apply_plan", "build_graph", "compose_plans", "fpgm",
    "get_criterion", "l1_norm", "l2_norm", "load_plan", "load_pruned", "load_sensitivity",
    "make_plan", "plot_sensitivity", "prune_sensitive", "prune_uniform", "register_layer",
    "replace_parameter", "save_plan", "scan_sensitivity", "select_kept", "sensitive_order",
    "uniform_order", "uniform_removal",
]
