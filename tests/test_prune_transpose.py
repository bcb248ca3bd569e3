"""Conv2DTranspose is pruned on both its channel axes, and pruning for a MACs target
meets the target that slimhub.flops counts on encoder-decoder, grouped, residual and
concat networks."""
import numpy as np
import paddle
import pytest
from paddle import nn

from slimhub.flops import flops
from slimhub.prune import apply_plan, build_graph, make_plan, prune_uniform, uniform_order
from slimhub.prune.criteria import filters_of
from test_prune_models import check_equivalent, kept, randomize


def block(conv, channels):
    return nn.Sequential(conv, nn.BatchNorm2D(channels), nn.ReLU())


class EncoderDecoder(nn.Layer):
    """Two stride-2 convolutions down, two transposed convolutions up, and a skip
    connection concatenated with the first upsampled map."""

    def __init__(self, width=16):
        super().__init__()
        w = width
        self.enc1 = block(nn.Conv2D(1, w, 3, padding=1), w)
        self.enc2 = block(nn.Conv2D(w, 2 * w, 3, stride=2, padding=1), 2 * w)
        self.enc3 = block(nn.Conv2D(2 * w, 4 * w, 3, stride=2, padding=1), 4 * w)
        self.up1 = block(nn.Conv2DTranspose(4 * w, 2 * w, 2, stride=2), 2 * w)
        self.dec1 = block(nn.Conv2D(4 * w, 2 * w, 3, padding=1), 2 * w)
        self.up2 = block(nn.Conv2DTranspose(2 * w, w, 2, stride=2), w)
        self.head = nn.Conv2D(w, 1, 1)

    def forward(self, x):
        e2 = self.enc2(self.enc1(x))
        d1 = self.dec1(paddle.concat([self.up1(self.enc3(e2)), e2], axis=1))
        return self.head(self.up2(d1))


class GroupedResidualDecoder(nn.Layer):
    """A grouped convolution in a residual block, a grouped and a depthwise transposed
    convolution, a residual add over the upsampled map and a concat before the head."""

    def __init__(self, width=64):
        super().__init__()
        w = width
        self.stem = block(nn.Conv2D(3, w, 3, padding=1), w)
        self.grouped = nn.Sequential(nn.Conv2D(w, w, 3, padding=1, groups=4), nn.BatchNorm2D(w))
        self.act = nn.ReLU()
        self.down = block(nn.Conv2D(w, 2 * w, 3, stride=2, padding=1), 2 * w)
        self.up = nn.Sequential(nn.Conv2DTranspose(2 * w, w, 4, stride=2, padding=1, groups=2), nn.BatchNorm2D(w))
        self.up_act = nn.ReLU()
        self.smooth = block(nn.Conv2DTranspose(w, w, 3, padding=1, groups=w), w)
        self.side = block(nn.Conv2D(w, w // 2, 1), w // 2)
        self.head = nn.Conv2D(w + w // 2, 10, 1)

    def forward(self, x):
        s = self.stem(x)
        r = self.act(self.grouped(s) + s)
        u = self.up_act(self.up(self.down(r)) + r)
        return self.head(paddle.concat([self.smooth(u), self.side(u)], axis=1))


def transposed_widths(model):
    return {name: (layer._in_channels, layer._out_channels) for name, layer in model.named_sublayers()
            if isinstance(layer, nn.Conv2DTranspose)}


@pytest.mark.parametrize("make, shape, round_to", [
    (EncoderDecoder, (1, 28, 28), 8),
    (EncoderDecoder, (1, 28, 28), 1),
    (GroupedResidualDecoder, (3, 16, 16), 8),
    (GroupedResidualDecoder, (3, 16, 16), 1),
])
@pytest.mark.parametrize("pruned_flops", [0.06, 0.3, 0.5])
def test_macs_target_is_met_as_slimhub_flops_counts(make, shape, round_to, pruned_flops):
    model = make()
    base = flops(model, shape)["flops"]
    before = transposed_widths(model)
    prune_uniform(model, shape, pruned_flops=pruned_flops, round_to=round_to)
    target = (1 - pruned_flops) * base
    assert abs(flops(model, shape)["flops"] - target) <= 0.02 * target
    if pruned_flops >= 0.3:  # the decoder loses channels too, on both sides
        after = transposed_widths(model)
        assert all(a[0] < b[0] and a[1] < b[1] for a, b in zip(after.values(), before.values())
                   if b[1] > 16), (before, after)


@pytest.mark.parametrize("make, shape", [(EncoderDecoder, (1, 28, 28)), (GroupedResidualDecoder, (3, 16, 16))])
def test_graph_macs_equal_the_counter_before_and_after(make, shape):
    model = make()
    graph = build_graph(model, shape)
    assert graph.base_flops == flops(model, shape)["flops"]
    removal = graph.removal_for_flops(uniform_order(graph), 0.4)
    apply_plan(model, make_plan(model, graph, removal))
    assert flops(model, shape)["flops"] == graph.flops(removal)


def test_decoder_groups():
    graph = build_graph(EncoderDecoder(), (1, 28, 28))
    members = {g.name: sorted((m.layer, m.role, m.axes, m.offset) for m in g.members) for g in graph.groups}
    assert members["enc3.0"] == [("enc3.0", "out", ("out_channels",), 0), ("enc3.1", "bn", ("num_features",), 0),
                                 ("up1.0", "in", ("in_channels",), 0)]
    # the upsampled map is the first 32 channels of the concat, the skip the next 32
    assert ("dec1.0", "in", ("in_channels",), 0) in members["up1.0"]
    assert ("dec1.0", "in", ("in_channels",), 32) in members["enc2.0"]
    assert ("up2.0", "in", ("in_channels",), 0) in members["dec1.0"]
    assert graph.left_out == {"head": "feeds the model output"}


def block_masks(plan):
    """Zero the removed channels after each block's ReLU (a block's BN has its kept channels)."""
    return {n[:-2]: kept(plan, n) for n, e in plan["layers"].items() if "num_features" in e and n[-2:] == ".1"}


def test_pruned_encoder_decoder_equals_masked_unpruned():
    plan, _ = check_equivalent(EncoderDecoder(), block_masks, ratio=0.5, shape=(1, 28, 28))
    up1 = plan["layers"]["up1.0"]
    assert up1["type"] == "Conv2DTranspose"
    assert up1["in_channels"]["keep"] == kept(plan, "enc3.1") and len(up1["in_channels"]["keep"]) == 32
    assert up1["out_channels"]["keep"] == kept(plan, "up1.1") and len(up1["out_channels"]["keep"]) == 16
    assert kept(plan, "dec1.0", "in_channels") == kept(plan, "up1.1") + [32 + i for i in kept(plan, "enc2.1")]


def grouped_masks(plan):
    masks = block_masks(plan)
    masks.update({"act": kept(plan, "grouped.1"), "up_act": kept(plan, "up.1")})
    return masks


def test_pruned_grouped_and_depthwise_transposed_equal_masked_unpruned():
    plan, _ = check_equivalent(GroupedResidualDecoder(32), grouped_masks, ratio=0.5, shape=(3, 16, 16))
    up = plan["layers"]["up.0"]
    keep_in, keep_out = np.array(up["in_channels"]["keep"]), np.array(up["out_channels"]["keep"])
    assert np.bincount(keep_in // 32).tolist() == [16, 16]  # 2 groups, as many kept in each
    assert np.bincount(keep_out // 16).tolist() == [8, 8]
    # the residual add ties the upsampled map to the stem, the grouped conv and the depthwise conv
    assert up["out_channels"]["keep"] == kept(plan, "stem.1") == kept(plan, "grouped.1")
    smooth = plan["layers"]["smooth.0"]
    assert smooth["in_channels"]["keep"] == smooth["out_channels"]["keep"] == kept(plan, "up.1")


@pytest.mark.parametrize("groups, cin, cout", [(1, 6, 4), (2, 6, 4), (6, 6, 6)])
def test_cut_layer_equals_full_layer_on_masked_input(groups, cin, cout):
    """A pruned Conv2DTranspose on the kept input channels gives the full layer's kept
    output channels when the removed input channels are zero."""
    rng = np.random.default_rng(groups)
    layer = randomize(nn.Conv2DTranspose(cin, cout, 3, stride=2, padding=1, groups=groups))
    depthwise = groups == cin == cout
    keep_in = np.array([0, 2, 4, 5]) if groups == 1 else np.array([0, 2, 3, 5])  # 2 per group of 3
    keep_out = keep_in if depthwise else (np.array([1, 2, 3]) if groups == 1 else np.array([0, 3]))
    x = rng.normal(size=(2, cin, 5, 5)).astype("float32")
    masked = np.zeros_like(x)
    masked[:, keep_in] = x[:, keep_in]
    with paddle.no_grad():
        want = layer(paddle.to_tensor(masked)).numpy()[:, keep_out]
    apply_plan(layer, {"format": "slimhub.prune_plan", "version": 1, "layers": {"": {
        "type": "Conv2DTranspose", "in_channels": {"size": cin, "keep": keep_in.tolist()},
        "out_channels": {"size": cout, "keep": keep_out.tolist()}}}})
    with paddle.no_grad():
        got = layer(paddle.to_tensor(x[:, keep_in])).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # MACs: input elements x (out_channels / groups) x kernel area, with the kept counts
    new_groups = len(keep_out) if depthwise else groups
    assert flops(layer, (len(keep_in), 5, 5))["flops"] == 25 * len(keep_in) * len(keep_out) // new_groups * 9


def test_transposed_filters_are_the_weights_making_each_output_channel():
    layer = nn.Conv2DTranspose(6, 4, 3, groups=2)  # weight [6, 2, 3, 3]: 3 inputs, 2 outputs per group
    w = layer.weight.numpy()
    want = np.stack([w[(o // 2) * 3:(o // 2) * 3 + 3, o % 2].ravel() for o in range(4)])
    np.testing.assert_array_equal(filters_of(layer), want)


def test_unequal_groups_are_refused():
    layer = nn.Conv2DTranspose(4, 4, 3, groups=2)
    plan = {"format": "slimhub.prune_plan", "version": 1, "layers": {"": {
        "type": "Conv2DTranspose", "in_channels": {"size": 4, "keep": [0, 1, 2]}}}}
    with pytest.raises(ValueError, match=r"layer '': in_channels must keep the same number of channels in "
                                         r"each of its 2 groups, got \[2, 1\]"):
        apply_plan(layer, plan)
