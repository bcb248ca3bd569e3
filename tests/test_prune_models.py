"""Pruned models compute what the unpruned model computes with the removed channels
zeroed after their activation (forward hooks on the unpruned model)."""
import os

import numpy as np
import paddle
import pytest
from paddle import nn
from paddle.vision.models import mobilenet_v1, resnet18, resnet50
from paddle.vision.models.vgg import VGG, cfgs, make_layers

from slimhub.prune import (apply_plan, build_graph, load_pruned, make_plan, prune_uniform,
                           save_plan, uniform_removal)

SHAPE = (3, 32, 32)


def randomize(model, seed=0):
    """Random weights and batch-norm statistics, so that no channel is trivially zero."""
    rng = np.random.default_rng(seed)
    for name, p in model.named_parameters():
        if name.endswith("_variance") or (name.endswith("weight") and p.ndim == 1):
            value = 0.5 + rng.random(p.shape, dtype=np.float32)
        elif p.ndim == 1:
            value = 0.3 * rng.standard_normal(p.shape, dtype=np.float32)
        else:  # keep activations at unit scale through deep networks
            fan_in = p.shape[0] if p.ndim == 2 else int(np.prod(p.shape[1:]))
            value = rng.standard_normal(p.shape, dtype=np.float32) / np.float32(np.sqrt(fan_in))
        p.set_value(value)
    model.eval()
    return model


def build(factory):
    """Construct a model with constant initial weights: ``randomize`` sets them all, and
    Paddle's random initialization of a ResNet-50 alone takes seconds."""
    nn.initializer.set_global_initializer(nn.initializer.Constant(0.0), nn.initializer.Constant(0.0))
    try:
        return factory()
    finally:
        nn.initializer.set_global_initializer(None, None)


def masked_output(model, x, masks):
    """``model(x)`` with the channels not kept zeroed at the outputs of the named layers."""
    layers = dict(model.named_sublayers())
    hooks = []
    for name, keep in masks.items():
        hooks.append(layers[name].register_forward_post_hook(_zero_hook(keep)))
    try:
        with paddle.no_grad():
            return model(x).numpy()
    finally:
        for h in hooks:
            h.remove()


def _zero_hook(keep):
    def hook(layer, inputs, output):
        mask = np.zeros(output.shape[1], dtype="float32")
        mask[keep] = 1.0
        shape = [1, -1] + [1] * (output.ndim - 2)
        return output * paddle.to_tensor(mask).reshape(shape)
    return hook


def kept(plan, layer, axis="num_features"):
    return plan["layers"][layer][axis]["keep"]


def check_equivalent(model, masks_for_plan, ratio=0.4, criterion="l1_norm", round_to=1, shape=SHAPE):
    """Prune ``model`` uniformly by ``ratio`` (kept counts rounded to ``round_to``); its
    output must equal the unpruned output with the masks that ``masks_for_plan(plan)`` gives."""
    randomize(model)
    x = paddle.to_tensor(np.random.default_rng(1).normal(size=(2,) + tuple(shape)).astype("float32"))
    graph = build_graph(model, shape, round_to=round_to)
    plan = make_plan(model, graph, uniform_removal(graph, ratio), criterion)
    masks = masks_for_plan(plan)
    assert masks, "the plan pruned nothing"
    want = masked_output(model, x, masks)
    unmasked = masked_output(model, x, {})
    scale = np.abs(want).max()
    assert np.abs(want - unmasked).max() > 1e-2 * scale, "masking changed nothing: weak test"
    apply_plan(model, plan)
    with paddle.no_grad():
        got = model(x).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * scale)
    return plan, x


def bn_masks(plan, residual=None):
    """Masks after every pruned batch norm (a ReLU follows: relu(0) = 0, so this zeroes the
    channel after the activation); ``residual`` maps a batch norm to the layer whose
    output is the post-activation (post-add for residual blocks) tensor to mask as well."""
    masks = {}
    for name, entry in plan["layers"].items():
        if "num_features" in entry:
            masks[name] = entry["num_features"]["keep"]
            if residual and residual(name):
                masks[residual(name)] = entry["num_features"]["keep"]
    return masks


def test_mobilenet_v1_scale_025():
    model = build(lambda: mobilenet_v1(scale=0.25, num_classes=10))
    # ConvNormActivation blocks end with their ReLU: mask the block output (after the activation)
    plan, _ = check_equivalent(model, lambda p: {n[:-2]: kept(p, n) for n, e in p["layers"].items()
                                                 if "num_features" in e})
    assert "in_channels" not in plan["layers"]["conv1.0"], "the input image channels were pruned"
    assert "out_features" not in plan["layers"].get("fc", {}), "the classifier outputs were pruned"
    dw = plan["layers"]["conv2_1._depthwise_conv.0"]
    assert dw["in_channels"]["keep"] == dw["out_channels"]["keep"] == kept(plan, "conv1.1")


def test_mobilenet_v1_scale_1_fpgm():
    model = build(lambda: mobilenet_v1(scale=1.0, num_classes=10))
    check_equivalent(model, lambda p: {n[:-2]: kept(p, n) for n, e in p["layers"].items()
                                       if "num_features" in e}, ratio=0.5, criterion="fpgm")


def block_output(last_bn):
    """For the batch norm ending a residual block ("layer1.0.bn2" in a basic block,
    "layer1.0.bn3" in a bottleneck), the block itself: its output is after the add."""
    def lookup(bn_name):
        parts = bn_name.split(".")
        return ".".join(parts[:2]) if len(parts) == 3 and parts[2] == last_bn else None
    return lookup


def test_resnet18_basic_blocks():
    model = build(lambda: resnet18(num_classes=10))
    plan, _ = check_equivalent(model, lambda p: bn_masks(p, block_output("bn2")))
    # one residual group per stage: the stage's convs and shortcut keep the same channels
    assert kept(plan, "layer2.0.bn2") == kept(plan, "layer2.1.bn2") == kept(plan, "layer2.0.downsample.1")
    assert kept(plan, "layer1.0.bn2") == kept(plan, "bn1")  # identity shortcut from the stem


def test_resnet50_bottleneck_blocks():
    model = build(lambda: resnet50(num_classes=10))
    plan, _ = check_equivalent(model, lambda p: bn_masks(p, block_output("bn3")), ratio=0.3)
    assert kept(plan, "layer3.0.bn3") == kept(plan, "layer3.5.bn3") == kept(plan, "layer3.0.downsample.1")


@pytest.mark.parametrize("cfg", ["A", "D"])  # vgg11 / vgg16 with batch norm
def test_vgg_bn(cfg):
    # paddle's VGG with batch norm; the head keeps its structure (7x7 pool, flatten,
    # Linear-ReLU-Dropout x2, Linear) but is narrower than 4096 so the test stays small
    model = build(lambda: VGG(make_layers(cfgs[cfg], batch_norm=True), num_classes=0))
    model.num_classes = 10
    model.classifier = nn.Sequential(nn.Linear(512 * 7 * 7, 32), nn.ReLU(), nn.Dropout(),
                                     nn.Linear(32, 24), nn.ReLU(), nn.Dropout(), nn.Linear(24, 10))

    def masks(plan):
        m = bn_masks(plan)
        m.update({"classifier.1": kept(plan, "classifier.0", "out_features"),
                  "classifier.4": kept(plan, "classifier.3", "out_features")})
        return m
    plan, _ = check_equivalent(model, masks)
    last_bn = [n for n in plan["layers"] if n.startswith("features")][-1]
    keep = np.array(kept(plan, last_bn))
    features = (keep[:, None] * 49 + np.arange(49)).ravel().tolist()  # each channel is 7x7 features
    assert kept(plan, "classifier.0", "in_features") == features


class Branchy(nn.Layer):
    """A stem, two branches joined by concat (one ends in a sigmoid), a residual add
    with a projection shortcut, and a flatten -> Linear -> ReLU -> Linear head."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2D(3, 8, 3, padding=1), nn.BatchNorm2D(8), nn.ReLU())
        self.a = nn.Sequential(nn.Conv2D(8, 6, 3, padding=1), nn.BatchNorm2D(6), nn.Hardswish())
        self.b = nn.Sequential(nn.Conv2D(8, 4, 1), nn.BatchNorm2D(4), nn.Sigmoid())
        self.mix = nn.Sequential(nn.Conv2D(10, 12, 3, stride=2, padding=1), nn.BatchNorm2D(12))
        self.short = nn.Sequential(nn.Conv2D(8, 12, 1, stride=2), nn.BatchNorm2D(12))
        self.act = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2D(4)
        self.fc1 = nn.Linear(12 * 16, 16)
        self.fc_act = nn.ReLU()
        self.fc2 = nn.Linear(16, 10)

    def forward(self, x):
        x = self.stem(x)
        y = paddle.concat([self.a(x), self.b(x)], axis=1)
        y = self.act(self.mix(y) + self.short(x))
        y = paddle.flatten(self.pool(y), 1)
        return self.fc2(self.fc_act(self.fc1(y)))


def branchy_masks(plan):
    # zero after each activation; the sigmoid branch is why masking must follow it
    return {"stem": kept(plan, "stem.1"), "a": kept(plan, "a.1"), "b": kept(plan, "b.1"),
            "act": kept(plan, "mix.1"), "fc_act": kept(plan, "fc1", "out_features")}


def test_user_network_with_concat_and_branch():
    plan, _ = check_equivalent(Branchy(), branchy_masks, ratio=0.5)
    a, b = kept(plan, "a.1"), kept(plan, "b.1")
    # concat: the consumer's input channels are a's kept channels, then b's shifted by 6
    assert kept(plan, "mix.0", "in_channels") == a + [6 + i for i in b]
    assert kept(plan, "mix.1") == kept(plan, "short.1")  # the residual add ties both sides


class SqueezeExcite(nn.Layer):
    """x * sigmoid(fc(pool(x))): the excitation's output channels are x's channels."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2D(3, 8, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2D(1)
        self.f1 = nn.Conv2D(8, 4, 1)
        self.f2 = nn.Conv2D(4, 8, 1)
        self.b = nn.Conv2D(8, 4, 1)

    def forward(self, x):
        y = nn.functional.relu(self.a(x))
        z = nn.functional.sigmoid(self.f2(nn.functional.relu(self.f1(self.pool(y)))))
        return self.b(y * z)


def test_squeeze_excite_block():
    # a ReLU follows a and f1 (relu(0) = 0); f2's removed outputs multiply zeroed channels of y
    plan, _ = check_equivalent(SqueezeExcite(), lambda p: {
        "a": kept(p, "a", "out_channels"), "f1": kept(p, "f1", "out_channels")}, ratio=0.5)
    assert kept(plan, "f2", "out_channels") == kept(plan, "a", "out_channels") == \
        kept(plan, "b", "in_channels")


def test_plan_round_trip_and_jit_save(tmp_path):
    model = randomize(Branchy())
    plan = prune_uniform(model, SHAPE, pruned_flops=0.4, round_to=1)
    save_plan(plan, str(tmp_path / "plan.json"))
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp")]
    x = paddle.to_tensor(np.random.default_rng(2).normal(size=(2,) + SHAPE).astype("float32"))
    rebuilt = load_pruned(Branchy(), str(tmp_path / "plan.json"))
    rebuilt.set_state_dict(model.state_dict())
    rebuilt.eval()
    with paddle.no_grad():
        np.testing.assert_array_equal(rebuilt(x).numpy(), model(x).numpy())

    path = str(tmp_path / "export" / "model")
    paddle.jit.save(model, path, input_spec=[paddle.static.InputSpec([None, *SHAPE], "float32")])
    loaded = paddle.jit.load(path)
    loaded.eval()
    with paddle.no_grad():
        np.testing.assert_allclose(loaded(x).numpy(), model(x).numpy(), rtol=1e-5, atol=1e-5)


def test_pruned_model_trains_on():
    model = randomize(Branchy())
    prune_uniform(model, SHAPE, ratio=0.5)
    model.train()
    opt = paddle.optimizer.Momentum(learning_rate=0.01, parameters=model.parameters())
    x = paddle.randn([4, *SHAPE])
    before = model.fc2.weight.numpy().copy()
    loss = model(x).mean()
    loss.backward()
    opt.step()
    assert not np.array_equal(before, model.fc2.weight.numpy())
    assert all(p.grad is not None for p in model.parameters() if not p.stop_gradient)


def test_plan_for_another_model_is_refused():
    plan = prune_uniform(randomize(Branchy()), SHAPE, ratio=0.5, round_to=1)
    with pytest.raises(KeyError, match="no layers named"):
        load_pruned(mobilenet_v1(scale=0.25, num_classes=10), plan)
    pruned = Branchy()
    load_pruned(pruned, plan)
    with pytest.raises(ValueError, match="out_channels is 4 in the model but 8 in the plan"):
        load_pruned(pruned, plan)  # already pruned


class GroupedNet(nn.Layer):
    """A grouped convolution (2 groups) and a depthwise convolution with multiplier 2."""

    def __init__(self):
        super().__init__()
        self.c0 = nn.Sequential(nn.Conv2D(3, 8, 3, padding=1), nn.BatchNorm2D(8), nn.ReLU())
        self.g = nn.Sequential(nn.Conv2D(8, 12, 3, padding=1, groups=2), nn.BatchNorm2D(12), nn.ReLU())
        self.c1 = nn.Sequential(nn.Conv2D(12, 4, 1), nn.BatchNorm2D(4), nn.ReLU())
        self.dw = nn.Sequential(nn.Conv2D(4, 8, 3, padding=1, groups=4), nn.BatchNorm2D(8), nn.ReLU())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2D(1), nn.Flatten(), nn.Linear(8, 10))

    def forward(self, x):
        return self.head(self.dw(self.c1(self.g(self.c0(x)))))


def test_grouped_and_multiplier_depthwise_convolutions():
    plan, _ = check_equivalent(GroupedNet(), lambda p: {n[:-2]: kept(p, n) for n, e in p["layers"].items()
                                                        if "num_features" in e}, ratio=0.5)
    c0 = np.array(kept(plan, "c0.1"))
    assert (c0 < 4).sum() == (c0 >= 4).sum() == 2  # the grouped conv reads 2 groups of 4
    g = np.array(kept(plan, "g.1"))
    assert (g < 6).sum() == (g >= 6).sum() == 3
    assert "c1.1" not in plan["layers"]  # one channel per depthwise group: nothing to cut
    dw = np.array(kept(plan, "dw.1"))
    assert np.array_equal(np.bincount(dw // 2, minlength=4), [1, 1, 1, 1])
