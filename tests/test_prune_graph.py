"""The traced groups match structures worked out by hand; what the tracer cannot follow
is left out with a warning naming it, never pruned wrongly."""
import warnings

import numpy as np
import paddle
import pytest
from paddle import nn
from paddle.vision.models import mobilenet_v1, resnet18

from slimhub.prune import build_graph, prune_uniform


def roles(group):
    return sorted((m.layer, m.role, m.offset, m.block) for m in group.members)


def test_mobilenet_depthwise_ties_to_previous_pointwise():
    graph = build_graph(mobilenet_v1(scale=0.25, num_classes=10), (3, 32, 32))
    # the stem conv and 13 pointwise convs; the classifier output is never prunable
    assert len(graph.groups) == 14
    assert graph.left_out == {"fc": "feeds the model output"}
    g = graph.group("conv2_1._pointwise_conv.0")
    assert roles(g) == [("conv2_1._pointwise_conv.0", "out", 0, 1), ("conv2_1._pointwise_conv.1", "bn", 0, 1),
                        ("conv2_2._depthwise_conv.0", "dw", 0, 1), ("conv2_2._depthwise_conv.1", "bn", 0, 1),
                        ("conv2_2._pointwise_conv.0", "in", 0, 1)]
    last = graph.group("conv6._pointwise_conv.0")
    assert ("fc", "in", 0, 1) in roles(last)  # pooled to 1x1: one feature per channel


def test_resnet18_groups():
    graph = build_graph(resnet18(num_classes=10), (3, 32, 32))
    # 8 blocks each with one inner group, plus one residual group per stage
    assert len(graph.groups) == 12
    stage1 = graph.group("conv1")
    assert sorted(stage1.sources) == ["conv1", "layer1.0.conv2", "layer1.1.conv2"]
    stage2 = [g for g in graph.groups if "layer2.0.downsample.0" in g.sources][0]
    assert sorted(stage2.sources) == ["layer2.0.conv2", "layer2.0.downsample.0", "layer2.1.conv2"]
    assert ("layer3.0.downsample.0", "in", 0, 1) in roles(stage2)


class Concat(nn.Layer):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2D(3, 5, 3, padding=1)
        self.b = nn.Conv2D(3, 3, 1)
        self.c = nn.Conv2D(8, 4, 1)
        self.fc = nn.Linear(4 * 2 * 2, 10)

    def forward(self, x):
        y = self.c(paddle.concat([nn.functional.relu(self.a(x)), self.b(x)], axis=1))
        return self.fc(paddle.flatten(nn.functional.max_pool2d(y, 4), 1))


def test_concat_offsets_and_flatten_blocks():
    graph = build_graph(Concat(), (3, 8, 8))
    assert roles(graph.group("a")) == [("a", "out", 0, 1), ("c", "in", 0, 1)]
    assert roles(graph.group("b")) == [("b", "out", 0, 1), ("c", "in", 5, 1)]
    # flatten of a 4-channel 2x2 map: channel i is features 4i..4i+3 of the Linear
    assert roles(graph.group("c")) == [("c", "out", 0, 1), ("fc", "in", 0, 4)]


class Sliced(nn.Layer):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2D(3, 8, 3, padding=1)
        self.b = nn.Conv2D(4, 6, 3, padding=1)
        self.fc = nn.Conv2D(6, 2, 1)

    def forward(self, x):
        return self.fc(nn.functional.relu(self.b(self.a(x)[:, :4])))


class ParamScale(nn.Layer):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2D(3, 8, 3, padding=1)
        self.alpha = self.create_parameter([1, 8, 1, 1])
        self.b = nn.Conv2D(8, 6, 1)
        self.fc = nn.Conv2D(6, 2, 1)

    def forward(self, x):
        return self.fc(nn.functional.relu(self.b(self.a(x) * self.alpha)))


class BufferShift(nn.Layer):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2D(3, 8, 3, padding=1)
        self.register_buffer("shift", paddle.ones([1, 8, 1, 1]))
        self.b = nn.Conv2D(8, 6, 1)
        self.fc = nn.Conv2D(6, 2, 1)

    def forward(self, x):
        return self.fc(nn.functional.relu(self.b(self.a(x) + self.shift)))


class InplaceWrite(nn.Layer):
    """An in-place write after the layer: the layer's own output node is traced, so the
    write is seen."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2D(3, 8, 3, padding=1)
        self.b = nn.Conv2D(8, 6, 1)
        self.fc = nn.Conv2D(6, 2, 1)

    def forward(self, x):
        y = self.a(x)
        y[:, :2] = 0.0
        return self.fc(nn.functional.relu(self.b(y)))


@pytest.mark.parametrize("net, op", [(Sliced, "slice"), (ParamScale, "multiply"), (BufferShift, "add"),
                                     (InplaceWrite, "setvalue")])
def test_unsupported_operation_leaves_group_out_with_warning(net, op):
    model = net()
    with pytest.warns(UserWarning, match=rf"operation '{op}' after layer 'a'.*'a'"):
        graph = build_graph(model, (3, 8, 8))
    assert [g.name for g in graph.groups] == ["b"]
    assert "a" in graph.left_out and op in graph.left_out["a"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plan = prune_uniform(model, (3, 8, 8), ratio=0.5, round_to=1)
    assert set(plan["layers"]) == {"b", "fc"}
    assert model(paddle.randn([1, 3, 8, 8])).shape == [1, 2, 8, 8]


class Transposed(nn.Layer):
    """Channels-last data after a transpose: the Linear does not read channels."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2D(3, 8, 3, padding=1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        return self.fc(self.a(x).transpose([0, 2, 3, 1])).mean()


class SharedLayer(nn.Layer):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2D(3, 8, 3, padding=1)
        self.c = nn.Conv2D(3, 8, 1)
        self.shared = nn.Conv2D(8, 8, 3, padding=1)
        self.out = nn.Conv2D(8, 2, 1)

    def forward(self, x):
        f = nn.functional.relu
        return self.out(f(self.shared(f(self.a(x)))) + f(self.shared(f(self.c(x)))))


def test_layer_called_twice_ties_its_inputs():
    graph = build_graph(SharedLayer(), (3, 8, 8))
    assert sorted(roles(graph.group("a"))) == [("a", "out", 0, 1), ("c", "out", 0, 1), ("shared", "in", 0, 1)]
    assert roles(graph.group("shared")) == [("out", "in", 0, 1), ("shared", "out", 0, 1)]


def test_transpose_is_not_followed():
    with pytest.warns(UserWarning, match="transpose"):
        graph = build_graph(Transposed(), (3, 4, 4))
    assert graph.groups == []


def test_scope_patterns():
    model = resnet18(num_classes=10)

    def names(**scope):
        return {g.name for g in build_graph(model, (3, 32, 32), **scope).groups}
    everything = names()
    stage1 = {"conv1", "layer1.0.conv1", "layer1.1.conv1"}  # conv1 names the stage-1 residual group
    assert names(exclude="layer1.*") == everything - stage1
    assert names(exclude=["conv1"]) == everything - {"conv1"}  # exact name: the stem only
    assert names(include="layer4.*") == {"layer4.0.conv1", "layer4.1.conv1", "layer4.0.conv2"}
    with pytest.raises(TypeError, match="include"):
        build_graph(model, (3, 32, 32), include=3)


def test_to_static_model_is_traced_in_dygraph():
    model = Concat()
    paddle.jit.to_static(model, full_graph=True)
    assert [g.name for g in build_graph(model, (3, 8, 8)).groups] == ["a", "b", "c"]


def test_trace_leaves_model_untouched():
    model = mobilenet_v1(scale=0.25, num_classes=10)
    model.train()
    model.fc.weight.stop_gradient = True
    before = {k: v.numpy().copy() for k, v in model.state_dict().items()}
    build_graph(model, (3, 32, 32))
    assert model.training and model.fc.weight.stop_gradient
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), before[k])


def test_bad_arguments():
    with pytest.raises(TypeError, match="paddle.nn.Layer"):
        build_graph("resnet", (3, 32, 32))
    with pytest.raises(ValueError, match="input_shape"):
        build_graph(Concat(), (3, -1, 32))
