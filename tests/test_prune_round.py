"""round_to: kept channel counts are multiples of it (or the group's size), the MACs
target is still met, coupled groups stay consistent, bad values get one-line errors."""
import numpy as np
import paddle
import pytest
from paddle import nn
from paddle.vision.models import mobilenet_v1, resnet18

from slimhub import Trainer
from slimhub.callbacks.prune import PruneCallback
from slimhub.flops import flops
from slimhub.prune import build_graph, load_pruned, make_plan, prune_sensitive, prune_uniform
from slimhub.recipe import RecipeError, load_recipe
from slimhub.recipe.schema import schema_keys
from test_prune_models import (GroupedNet, block_output, bn_masks, build, check_equivalent, kept,
                               randomize)

SHAPE = (3, 32, 32)


def mobilenet():
    return build(lambda: mobilenet_v1(scale=0.25, num_classes=10))


def resnet():
    return build(lambda: resnet18(num_classes=10))


def conv_widths(model):
    return {name: layer._out_channels for name, layer in model.named_sublayers()
            if isinstance(layer, nn.Conv2D)}


def linear_record(model, shape):
    """A sensitivity record (no scan) in which each group loses a different amount per
    pruned ratio, so that the allocation is far from uniform."""
    groups = build_graph(model, shape).groups
    slopes = np.random.default_rng(0).uniform(0.1, 10, len(groups))
    ratios = [0.1 * i for i in range(1, 10)]
    return {"format": "slimhub.sensitivity", "version": 1, "criterion": "l1_norm", "baseline": 0.0,
            "groups": {g.name: {"size": g.size, "metrics": {f"{r:g}": -s * r for r in ratios}}
                       for g, s in zip(groups, slopes)}}


@pytest.mark.parametrize("method", ["uniform", "sensitive"])
@pytest.mark.parametrize("round_to", [8, 16])
@pytest.mark.parametrize("make", [mobilenet, resnet], ids=["mobilenet", "resnet"])
def test_kept_counts_are_multiples_and_the_macs_target_is_met(make, round_to, method):
    model = make()
    before, base = conv_widths(model), flops(model, SHAPE)["flops"]
    if method == "uniform":
        prune_uniform(model, SHAPE, pruned_flops=0.5, round_to=round_to)
    else:
        prune_sensitive(model, SHAPE, linear_record(model, SHAPE), 0.5, round_to=round_to)
    after = conv_widths(model)
    assert after != before
    for name, width in after.items():
        assert width % round_to == 0 or width == before[name], (name, before[name], width)
    assert abs(flops(model, SHAPE)["flops"] - 0.5 * base) <= 0.02 * 0.5 * base
    if make is mobilenet:  # the 8-channel stem (and its depthwise conv) has no smaller multiple
        assert after["conv1.0"] == after["conv2_1._depthwise_conv.0"] == 8


def test_groups_too_small_keep_their_size_and_are_listed():
    model = mobilenet()
    with pytest.warns(UserWarning, match=r"round_to=16: .*'conv1\.0' \(8\), 'conv2_1\._pointwise_conv\.0' \(16\)"):
        graph = build_graph(model, SHAPE, round_to=16)
    assert "round_to=16" in graph.left_out["conv1.0"]
    assert "conv1.0" not in [g.name for g in graph.groups]
    assert graph.group("conv2_2._pointwise_conv.0").removals == [0, 16]  # 32: keep 32 or 16


def test_ratio_keeps_the_nearest_multiple():
    model = nn.Sequential(nn.Conv2D(3, 64, 3, padding=1), nn.BatchNorm2D(64), nn.ReLU(),
                          nn.Conv2D(64, 20, 3, padding=1), nn.BatchNorm2D(20), nn.ReLU(),
                          nn.AdaptiveAvgPool2D(1), nn.Flatten(), nn.Linear(20, 10))
    # 0.35 keeps 41.6 of 64 and 13 of 20; the nearest multiples of 8 are 40 and 16
    plan = prune_uniform(model, (3, 8, 8), ratio=0.35, round_to=8)
    assert len(kept(plan, "0", "out_channels")) == 40 and len(kept(plan, "3", "out_channels")) == 16
    assert model[3]._in_channels == 40 and model[8].weight.shape == [16, 10]


def masks_after_blocks(plan):
    return {n[:-2]: kept(plan, n) for n, e in plan["layers"].items() if "num_features" in e}


def test_depthwise_and_residual_groups_stay_consistent():
    plan, _ = check_equivalent(mobilenet(), masks_after_blocks, ratio=0.5, round_to=8)
    dw = plan["layers"]["conv3_1._depthwise_conv.0"]
    assert dw["in_channels"]["keep"] == dw["out_channels"]["keep"] == kept(plan, "conv2_2._pointwise_conv.1")
    assert len(dw["out_channels"]["keep"]) % 8 == 0
    plan, _ = check_equivalent(resnet(), lambda p: bn_masks(p, block_output("bn2")), ratio=0.5, round_to=16)
    stage2 = kept(plan, "layer2.0.bn2")
    assert stage2 == kept(plan, "layer2.1.bn2") == kept(plan, "layer2.0.downsample.1")
    assert len(stage2) == 64
    for entry in plan["layers"].values():
        for axis in entry.values():
            if isinstance(axis, dict) and axis["size"] != len(axis["keep"]):
                assert len(axis["keep"]) % 16 == 0


def test_grouped_convolutions_keep_equal_blocks():
    plan, _ = check_equivalent(GroupedNet(), masks_after_blocks, ratio=0.4, round_to=4)
    # c0 (8, read in 2 groups) keeps 4.8 -> 4; g (12 in 2 groups) 7.2 -> 8; dw (8 in 4 groups) -> 4
    c0, g, dw = (np.array(kept(plan, n)) for n in ("c0.1", "g.1", "dw.1"))
    assert np.bincount(c0 // 4).tolist() == [2, 2]
    assert np.bincount(g // 6).tolist() == [4, 4]
    assert np.bincount(dw // 2, minlength=4).tolist() == [1, 1, 1, 1]
    assert "c1.1" not in plan["layers"]  # one channel per block of the depthwise conv reading it


def plain_net():
    return nn.Sequential(
        nn.Conv2D(3, 8, 3, padding=1), nn.BatchNorm2D(8), nn.ReLU(),
        nn.Conv2D(8, 16, 3, padding=1), nn.BatchNorm2D(16), nn.ReLU(),
        nn.AdaptiveAvgPool2D(1), nn.Flatten(), nn.Linear(16, 10))


def one_line_error(fn, match):
    with pytest.raises(ValueError, match=match) as info:
        fn()
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("bad", [0, -8, 2.5, True, "8", None])
def test_round_to_must_be_a_positive_integer(bad):
    match = rf"round_to must be a positive integer.*got {bad!r}"
    one_line_error(lambda: prune_uniform(plain_net(), (3, 8, 8), ratio=0.5, round_to=bad), match)
    one_line_error(lambda: prune_sensitive(plain_net(), (3, 8, 8), {}, 0.5, round_to=bad), match)
    one_line_error(lambda: PruneCallback(input_shape=(3, 8, 8), round_to=bad), "PruneCallback: " + match)


def test_round_to_above_every_group_and_off_multiple_plans_are_refused():
    one_line_error(lambda: prune_uniform(plain_net(), (3, 8, 8), pruned_flops=0.5, round_to=16),
                   r"round_to=16 leaves nothing to prune.*'0' \(8\), '3' \(16\)")
    model = plain_net()
    graph = build_graph(model, (3, 8, 8), round_to=4)
    one_line_error(lambda: make_plan(model, graph, {"3": 6}),
                   r"group '3' cannot lose 6 of its 16 channels.*multiple of 4 \(round_to=4\)")


def test_recipe_key_and_its_range(tmp_path):
    assert "strategies[prune].round_to" in schema_keys()
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model: {name: mobilenet_v1, args: {in_channels: 1, num_classes: 10, scale: 0.25}}\n"
                      "strategies: {prune: {pruned_flops: 0.5}}\n")
    for bad in ("0", "2.5"):
        with pytest.raises(RecipeError, match=rf"strategies\.prune\.round_to: got {bad}; allowed: a positive integer \(kept channel counts"):
            load_recipe(str(recipe), [f"strategies.prune.round_to={bad}"])


def test_callback_prunes_to_multiples_in_gradual_sensitive_steps(data):
    paddle.seed(0)
    model = nn.Sequential(nn.Conv2D(1, 32, 3, padding=1), nn.BatchNorm2D(32), nn.ReLU(),
                          nn.Conv2D(32, 48, 3, padding=1), nn.BatchNorm2D(48), nn.ReLU(),
                          nn.AdaptiveAvgPool2D(1), nn.Flatten(), nn.Linear(48, 3))
    base = flops(model, (1, 8, 8))["flops"]
    opt = paddle.optimizer.Momentum(learning_rate=0.05, parameters=model.parameters())
    history = Trainer(model, opt, nn.CrossEntropyLoss(), paddle.metric.Accuracy()).fit(
        data, eval_data=data, epochs=2, batch_size=16, verbose=0, callbacks=[
            PruneCallback(0.5, method="sensitive", steps=2, end_epoch=1, input_shape=(1, 8, 8), round_to=8)])
    assert history["flops"][1] < history["flops"][0] < base  # two steps, each to multiples of 8
    assert model[0]._out_channels % 8 == 0 and model[3]._out_channels % 8 == 0
    assert model[3]._in_channels == model[0]._out_channels


def test_plans_without_rounding_still_load():
    # a plan as written before round_to existed: odd kept counts
    plan = {"format": "slimhub.prune_plan", "version": 1, "layers": {
        "0": {"type": "Conv2D", "out_channels": {"size": 8, "keep": [0, 2, 3, 5, 7]}},
        "1": {"type": "BatchNorm2D", "num_features": {"size": 8, "keep": [0, 2, 3, 5, 7]}},
        "3": {"type": "Conv2D", "in_channels": {"size": 8, "keep": [0, 2, 3, 5, 7]},
              "out_channels": {"size": 16, "keep": list(range(11))}},
        "4": {"type": "BatchNorm2D", "num_features": {"size": 16, "keep": list(range(11))}},
        "8": {"type": "Linear", "in_features": {"size": 16, "keep": list(range(11))}}}}
    model = load_pruned(randomize(plain_net()), plan)
    assert model[0]._out_channels == 5 and model[3]._out_channels == 11
    assert model(paddle.randn([2, 3, 8, 8])).shape == [2, 10]
