"""MACs after pruning: slimhub.flops on the pruned model, a hand formula, and the
requested target within one channel's worth."""
import copy

import pytest
from paddle import nn
from paddle.vision.models import mobilenet_v1, resnet18

from slimhub.flops import flops
from slimhub.prune import apply_plan, build_graph, make_plan, uniform_order, uniform_removal


def count(model, shape):
    return flops(model, shape)["flops"]


def plain_net():
    return nn.Sequential(
        nn.Conv2D(3, 8, 3, padding=1), nn.BatchNorm2D(8), nn.ReLU(),
        nn.Conv2D(8, 16, 3, padding=1), nn.BatchNorm2D(16), nn.ReLU(), nn.MaxPool2D(2),
        nn.AdaptiveAvgPool2D(1), nn.Flatten(), nn.Linear(16, 10))


def test_pruned_macs_match_hand_formula():
    model = plain_net()
    graph = build_graph(model, (3, 8, 8))
    removal = uniform_removal(graph, 0.5)
    assert removal == {"0": 4, "3": 8}
    apply_plan(model, make_plan(model, graph, removal))
    c1, c2 = 4, 8  # kept channels
    hand = (64 * c1 * 3 * 9 + 64 * c1          # conv1, bn1 on 8x8
            + 64 * c2 * c1 * 9 + 64 * c2       # conv2, bn2
            + 16 * c2 * 4 + 16 * c2            # 2x2 max pool to 4x4, adaptive pool reads 4x4
            + c2 * 10)                         # classifier
    assert count(model, (3, 8, 8)) == hand == graph.flops(removal)


@pytest.mark.parametrize("make, shape", [
    (lambda: mobilenet_v1(scale=0.25, num_classes=10), (3, 32, 32)),
    (lambda: resnet18(num_classes=10), (3, 32, 32)),
])
def test_unpruned_macs_match_counter(make, shape):
    model = make()
    assert build_graph(model, shape).base_flops == count(model, shape)


@pytest.mark.parametrize("target", [0.3, 0.5])
def test_flops_target_within_one_channel(target):
    shape = (3, 32, 32)
    model = mobilenet_v1(scale=0.25, num_classes=10)
    base = count(model, shape)
    graph = build_graph(model, shape)
    # one channel's worth: the most MACs that removing one channel of any group saves,
    # measured with slimhub.flops on physically pruned copies
    one_channel = 0
    for g in graph.groups:
        single = copy.deepcopy(model)
        apply_plan(single, make_plan(single, graph, {g.name: 1}))
        one_channel = max(one_channel, base - count(single, shape))
    removal = graph.removal_for_flops(uniform_order(graph), target)
    apply_plan(model, make_plan(model, graph, removal))
    pruned = count(model, shape)
    assert pruned == graph.flops(removal)
    assert abs(pruned - (1 - target) * base) <= one_channel
    # uniform: group ratios differ by no more than one channel's rounding
    ratios = [removal.get(g.name, 0) / g.size for g in graph.groups]
    assert max(ratios) - min(ratios) <= 2 / min(g.size for g in graph.groups)


def test_unreachable_target_is_refused():
    graph = build_graph(plain_net(), (3, 8, 8))
    with pytest.raises(ValueError, match="cannot remove 99.0% of the MACs"):
        graph.removal_for_flops(uniform_order(graph), 0.99)
    with pytest.raises(ValueError, match="pruned_flops"):
        graph.removal_for_flops(uniform_order(graph), 1.5)
