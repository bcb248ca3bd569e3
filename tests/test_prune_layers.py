"""The layer table: a layer type registered as docs/prune.md shows is traced, pruned and
counted; a type with no entry keeps its channels and the warning says how to register it."""
import warnings

import numpy as np
import paddle
import pytest
from paddle import nn

from slimhub.flops import flops
from slimhub.prune import (Coupling, LayerEntry, Macs, apply_plan, build_graph, make_plan, prune_uniform,
                           register_layer, replace_parameter, uniform_removal)
from slimhub.prune.criteria import filters_of
from test_prune_models import masked_output, randomize


# ----------------------------------------------------------- as in docs/prune.md
class Pointwise(nn.Layer):
    """A 1x1 convolution written with a matrix product."""

    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.weight = self.create_parameter([out_channels, in_channels])

    def forward(self, x):
        n, c, h, w = x.shape
        return paddle.matmul(self.weight, x.reshape([n, c, h * w])).reshape([n, -1, h, w])


class PointwiseEntry(LayerEntry):
    def axes(self, layer):
        out_channels, in_channels = layer.weight.shape
        return {"out_channels": out_channels, "in_channels": in_channels}

    def coupling(self, layer, x):
        return Coupling(reads="in_channels", makes="out_channels")

    def filters(self, layer):
        return layer.weight.numpy()  # one row per output channel

    def apply(self, layer, keep, where):
        w = layer.weight.numpy()[keep["out_channels"]][:, keep["in_channels"]]
        replace_parameter(layer, "weight", w)

    def macs(self, layer, x, y):
        out_channels, in_channels = layer.weight.shape
        h, w = y.shape[2:]
        return Macs(h * w, (("out_channels", out_channels, 1), ("in_channels", in_channels, 1)))


register_layer(Pointwise, PointwiseEntry())
# ------------------------------------------------------------------------------


class Scale(nn.Layer):
    """A learned scale per channel: channel i in makes channel i out."""

    def __init__(self, channels):
        super().__init__()
        self.weight = self.create_parameter([channels], default_initializer=nn.initializer.Constant(1.0))

    def forward(self, x):
        return x * self.weight.reshape([1, -1, 1, 1])


class ScaleEntry(LayerEntry):
    def axes(self, layer):
        return {"channels": layer.weight.shape[0]}

    def coupling(self, layer, x):
        return Coupling(through=("channels",))

    def apply(self, layer, keep, where):
        replace_parameter(layer, "weight", layer.weight.numpy()[keep["channels"]])

    def macs(self, layer, x, y):
        channels = layer.weight.shape[0]
        return Macs(int(np.prod(y.shape[2:])), (("channels", channels, 1),))


register_layer(Scale, ScaleEntry())


class UnknownPointwise(nn.Layer):
    """The same computation as Pointwise, in a type that is not registered."""

    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.weight = self.create_parameter([out_channels, in_channels])

    forward = Pointwise.forward


def net(pointwise=Pointwise):
    return nn.Sequential(
        nn.Conv2D(3, 16, 3, padding=1), nn.BatchNorm2D(16), nn.ReLU(),     # 0-2
        pointwise(16, 24), Scale(24), nn.ReLU(),                           # 3-5
        nn.Conv2D(24, 8, 3, padding=1), nn.ReLU(),                         # 6-7
        nn.AdaptiveAvgPool2D(1), nn.Flatten(), nn.Linear(8, 10))           # 8-10


SHAPE = (3, 8, 8)


def test_registered_layers_are_grouped():
    graph = build_graph(net(), SHAPE)
    members = {g.name: sorted((m.layer, m.role, m.axes) for m in g.members) for g in graph.groups}
    assert members == {
        "0": [("0", "out", ("out_channels",)), ("1", "bn", ("num_features",)), ("3", "in", ("in_channels",))],
        "3": [("3", "out", ("out_channels",)), ("4", "through", ("channels",)), ("6", "in", ("in_channels",))],
        "6": [("10", "in", ("in_features",)), ("6", "out", ("out_channels",))]}


def test_registered_layers_prune_to_the_masked_unpruned_network():
    model = randomize(net())
    x = paddle.to_tensor(np.random.default_rng(1).normal(size=(2,) + SHAPE).astype("float32"))
    graph = build_graph(model, SHAPE)
    plan = make_plan(model, graph, uniform_removal(graph, 0.5))
    keep0, keep3 = plan["layers"]["1"]["num_features"]["keep"], plan["layers"]["3"]["out_channels"]["keep"]
    # the custom layer's filters are ranked: its 12 rows of largest L1 norm stay
    w = model[3].weight.numpy()
    assert keep3 == sorted(np.argsort(-np.abs(w).sum(axis=1))[:12].tolist())
    assert plan["layers"]["4"] == {"type": "Scale", "channels": {"size": 24, "keep": keep3}}
    want = masked_output(model, x, {"2": keep0, "5": keep3, "7": plan["layers"]["6"]["out_channels"]["keep"]})
    full_w, full_scale = w.copy(), model[4].weight.numpy().copy()
    apply_plan(model, plan)
    with paddle.no_grad():
        got = model(x).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * np.abs(want).max())
    np.testing.assert_array_equal(model[3].weight.numpy(), full_w[keep3][:, keep0])
    np.testing.assert_array_equal(model[4].weight.numpy(), full_scale[keep3])


def test_registered_layer_macs_are_counted_and_targeted():
    model = net()
    c0, c3, c6 = 16, 24, 8
    hand = (64 * c0 * 3 * 9 + 64 * c0       # conv 0, batch norm 1 on 8x8
            + 64 * c3 * c0 + 64 * c3        # Pointwise 3, Scale 4
            + 64 * c6 * c3 * 9 + 64 * c6    # conv 6, adaptive pool 8 (one per input element)
            + c6 * 10)                      # Linear 10
    assert flops(model, SHAPE)["flops"] == hand == build_graph(model, SHAPE).base_flops
    prune_uniform(model, SHAPE, pruned_flops=0.5, round_to=1)
    c0, c3, c6 = model[0]._out_channels, model[3].weight.shape[0], model[6]._out_channels
    assert model[3].weight.shape == [c3, c0] and model[4].weight.shape == [c3]
    pruned = (64 * c0 * 3 * 9 + 64 * c0 + 64 * c3 * c0 + 64 * c3 + 64 * c6 * c3 * 9 + 64 * c6 + c6 * 10)
    assert flops(model, SHAPE)["flops"] == pruned
    assert abs(pruned - 0.5 * hand) <= 0.02 * 0.5 * hand


def test_unregistered_type_is_left_whole_and_the_warning_says_how_to_register():
    model = net(UnknownPointwise)
    with pytest.warns(UserWarning, match=r"runs inside UnknownPointwise '3', a layer type slimhub cannot "
                                         r"prune: add its type with slimhub\.prune\.register_layer"):
        graph = build_graph(model, SHAPE)
    assert [g.name for g in graph.groups] == ["6"]
    assert "register_layer" in graph.left_out["0"]
    assert flops(model, SHAPE)["flops"] == flops(net(), SHAPE)["flops"] - 64 * 24 * 16  # counts zero
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plan = prune_uniform(model, SHAPE, ratio=0.5, round_to=1)
    assert set(plan["layers"]) == {"6", "10"}


def test_plan_for_an_unregistered_type_is_refused_with_the_way_out():
    plan = {"format": "slimhub.prune_plan", "version": 1, "layers": {
        "3": {"type": "UnknownPointwise", "out_channels": {"size": 24, "keep": [0, 1]}}}}
    with pytest.raises(TypeError, match=r"plan: layer '3': slimhub cannot prune a UnknownPointwise .*"
                                        r"slimhub\.prune\.register_layer") as info:
        apply_plan(net(UnknownPointwise), plan)
    assert "\n" not in str(info.value)
    with pytest.raises(TypeError, match="filters_of: slimhub cannot prune a UnknownPointwise"):
        filters_of(UnknownPointwise(2, 3))


class OwnForwardConv(nn.Conv2D):
    def forward(self, x):
        return nn.functional.conv2d(x, self.weight, self.bias, padding=1)


def test_subclass_with_its_own_forward_is_counted_as_its_base_but_not_pruned():
    model = nn.Sequential(nn.Conv2D(3, 8, 3, padding=1), nn.ReLU(), OwnForwardConv(8, 8, 3), nn.ReLU(),
                          nn.Conv2D(8, 4, 1))
    assert flops(model, SHAPE)["flops"] == 64 * 8 * 3 * 9 + 64 * 8 * 8 * 9 + 64 * 4 * 8
    with pytest.warns(UserWarning, match=r"inside OwnForwardConv '2'.*register_layer"):
        graph = build_graph(model, SHAPE)
    assert graph.groups == []


@pytest.mark.parametrize("call, message", [
    (lambda: register_layer("Pointwise", PointwiseEntry()), "layer_type must be a paddle.nn.Layer subclass, got 'Pointwise'"),
    (lambda: register_layer(Pointwise, PointwiseEntry), "the entry for Pointwise must be a slimhub.prune.LayerEntry"),
    (lambda: Coupling(through="channels"), "through must be a tuple of axis names, got 'channels'"),
    (lambda: Coupling(reads="in_channels", through=("channels",)), "through=\\('channels',\\) excludes reads and makes"),
    (lambda: Coupling(), "give reads, makes or through"),
    (lambda: Coupling(reads="in_channels", makes="out_channels", groups=0), "groups must be a positive integer, got 0"),
])
def test_bad_registrations_are_one_line_errors(call, message):
    with pytest.raises((TypeError, ValueError), match=message) as info:
        call()
    assert "\n" not in str(info.value)


def test_counting_and_tracing_restore_every_training_flag():
    model = net()
    model.train()
    model[1].eval()  # a frozen batch norm in a training network
    flops(model, SHAPE)
    build_graph(model, SHAPE)
    assert [layer.training for layer in model.sublayers(include_self=True)] == \
        [True, True, False] + [True] * 9
