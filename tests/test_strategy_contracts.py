"""Each strategy's contract (``PruneCallback.contract``, ...): one rule per argument and one
epoch window, used alike by the callback (errors name the argument) and by the recipe
schema (errors name the key path, file and line)."""
import textwrap

import paddle
import pytest
from paddle import nn

from slimhub import Trainer
from slimhub.callbacks import Callback, PruneCallback, QATCallback, keep_float
from slimhub.quant.wrap import quantized_layers
from slimhub.recipe import RecipeError, build, check_recipe
from slimhub.recipe.schema import schedule

MODEL = "model: {name: mobilenet_v1, args: {in_channels: 1, num_classes: 10, scale: 0.25}}\n"
SHAPE = (1, 8, 8)


def recipe(tmp_path, text):
    """A recipe file: the model on line 1, then ``text``."""
    path = tmp_path / "r.yaml"
    path.write_text(MODEL + textwrap.dedent(text))
    return str(path)


def recipe_error(path, overrides=None):
    with pytest.raises(RecipeError) as info:
        check_recipe(path, overrides)
    return str(info.value)


@pytest.mark.parametrize("strategy, key, value, allowed", [
    ("qat", "target", "x87", "one of ['arm', 'x86', 'x86_vnni']"),
    ("qat", "weight_quantize_type", "moving_average_abs_max", "one of ['abs_max', 'channel_wise_abs_max']"),
    ("qat", "weight_bits", 1, "null or an integer in [2, 16]"),
    ("prune", "method", "greedy", "one of ['sensitive', 'uniform']"),
    ("prune", "criterion", "l0", "one of ['fpgm', 'l1_norm', 'l2_norm']"),
    ("prune", "steps", 0, "an integer in [1, 10000]"),
    ("distill", "losses", [], "a list of at least 1 item, each item a mapping"),
])
def test_a_strategy_contract_refuses_a_bad_value_at_its_key_path(tmp_path, strategy, key, value, allowed):
    teacher = "    teacher: {name: mobilenet_v1}\n" if strategy == "distill" else ""
    path = recipe(tmp_path, f"trainer: {{epochs: 4}}\nstrategies:\n  {strategy}:\n    {key}: {value}\n{teacher}")
    assert recipe_error(path) == f"{path}:5: strategies.{strategy}.{key}: got {value!r}; allowed: {allowed}"


@pytest.mark.parametrize("bad, written", [(0, "0"), (1, "1"), (1.5, "1.5"), (-0.2, "-0.2"), (True, "true"),
                                          ("0.5", "'0.5'"), (None, "null")])
def test_the_pruning_ratio_is_refused_alike_by_the_callback_and_the_recipe(tmp_path, bad, written):
    with pytest.raises(ValueError) as info:
        PruneCallback(bad, input_shape=SHAPE)
    assert str(info.value) == f"PruneCallback: pruned_flops must be a number in (0, 1), got {bad!r}"
    path = recipe(tmp_path, "strategies:\n  prune: {pruned_flops: 0.3}\n")
    override = f"strategies.prune.pruned_flops={written}"
    assert recipe_error(path, [override]) == \
        f"--set {override}: strategies.prune.pruned_flops: got {bad!r}; allowed: a number in (0, 1)"
    assert PruneCallback(0.3, input_shape=SHAPE).pruned_flops == check_recipe(path)["strategies"]["prune"][
        "pruned_flops"] == 0.3


@pytest.mark.parametrize("start, end, steps, epochs", [
    (3, None, 1, [3]), (3, 3, 1, [3]), (0, 2, 3, [0, 1, 2]), (2, 8, 4, [2, 4, 6, 8]), (0, 5, 3, [0, 2, 5]),
    (1, 10, 4, [1, 4, 7, 10]),
])
def test_pruning_epochs_and_the_recipe_window_are_the_steps_worked_out_by_hand(tmp_path, start, end, steps, epochs):
    assert PruneCallback(start_epoch=start, end_epoch=end, steps=steps, input_shape=SHAPE).schedule == epochs
    path = recipe(tmp_path, f"trainer: {{epochs: 11}}\nstrategies:\n  prune: {{start_epoch: {start}, "
                            f"end_epoch: {'null' if end is None else end}, steps: {steps}}}\n")
    assert schedule(check_recipe(path)) == [("prune", "prune", epochs[0], epochs[-1])]


def test_the_recipe_schedule_is_each_contracts_window(tmp_path):
    path = recipe(tmp_path, """\
        trainer: {epochs: 10}
        strategies:
          qat: {start_epoch: 9}
          prune: {start_epoch: 2, end_epoch: 8, steps: 4}
          distill:
            teacher: {name: mobilenet_v1}
            losses: [{type: soft_label, teacher: fc, student: fc}]
            start_epoch: 1
            end_epoch: 5
        """)
    assert schedule(check_recipe(path)) == [("distill", "distill", 1, 4), ("prune", "prune", 2, 8),
                                            ("qat", "qat", 9, 9)]


STEPS_NEED_AN_END = ("2 pruning steps need end_epoch (the epoch of the last step, at least start_epoch + 1: "
                     "one step per epoch at most)")


@pytest.mark.parametrize("keys, key, reason", [
    ({"steps": 3, "start_epoch": 4, "end_epoch": 5}, "end_epoch",
     "3 pruning steps from epoch 4 need end_epoch >= 6 (one step per epoch at most)"),
    ({"start_epoch": 3, "end_epoch": 1}, "end_epoch", "pruning at epoch 3 (start_epoch) cannot end before it"),
    ({"steps": 2}, "steps", STEPS_NEED_AN_END),
])
def test_contradicting_window_keys_are_refused_alike_by_the_callback_and_the_recipe(tmp_path, keys, key, reason):
    with pytest.raises(ValueError) as info:
        PruneCallback(input_shape=SHAPE, **keys)
    assert str(info.value) == f"PruneCallback: {reason}, got {key}={keys[key]!r}"
    path = recipe(tmp_path, "trainer: {epochs: 10}\nstrategies:\n  prune:\n"
                  + "".join(f"    {k}: {v}\n" for k, v in keys.items()))
    line = 5 + list(keys).index(key)
    assert recipe_error(path) == f"{path}:{line}: strategies.prune.{key}: got {keys[key]}; {reason}"


class Toy(Callback):
    """A strategy that declares no contract of its own."""

    def __init__(self, start_epoch=0, end_epoch=None):
        super().__init__()


def test_a_strategy_without_a_contract_gets_the_window_rules(tmp_path, monkeypatch):
    monkeypatch.setitem(build.STRATEGIES, "toy", Toy)
    path = recipe(tmp_path, "trainer: {epochs: 6}\nstrategies:\n  toy:\n    start_epoch: 2\n    end_epoch: 4\n")
    assert schedule(check_recipe(path)) == [("toy", "toy", 2, 3)]
    assert recipe_error(path, ["strategies.toy.end_epoch=2"]) == (
        "--set strategies.toy.end_epoch=2: strategies.toy.end_epoch: got 2; the strategy starts at epoch 2 "
        "(start_epoch) and stops before epoch end_epoch, so end_epoch must be greater than 2")
    assert recipe_error(path, ["strategies.toy.start_epoch=-1"]) == (
        "--set strategies.toy.start_epoch=-1: strategies.toy.start_epoch: got -1; allowed: an integer in [0, 9999]")


def trainer_of(net):
    return Trainer(net, paddle.optimizer.SGD(parameters=net.parameters()), nn.CrossEntropyLoss())


class WithHelper(nn.Layer):
    """A conv net and a training-only helper marked ``keep_float``."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2D(1, 4, 3)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
        self.helper = keep_float(nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 3)))

    def forward(self, x):
        return self.head(self.conv(x))


def test_layers_marked_keep_float_stay_float_and_quantization_reports_its_settings():
    net = WithHelper()
    qat = QATCallback(skip=["conv"])
    qat.set_model(trainer_of(net))
    assert qat.quantization is None
    qat.on_epoch_begin(0)
    assert sorted(quantized_layers(net)) == ["head.1"]
    assert qat.quantization == {"weight_quantize_type": "channel_wise_abs_max",
                                "activation_quantize_type": "moving_average_abs_max", "target": "x86",
                                "weight_bits": 7, "activation_bits": 8, "moving_rate": 0.9, "skip": ["conv"]}


def test_pruning_plan_is_none_until_pruned_then_holds_the_kept_channels():
    paddle.seed(0)
    net = nn.Sequential(nn.Conv2D(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2D(8, 8, 3, padding=1), nn.ReLU(),
                        nn.AdaptiveAvgPool2D(1), nn.Flatten(), nn.Linear(8, 3))
    prune = PruneCallback(0.5, input_shape=SHAPE, round_to=1)
    prune.set_model(trainer_of(net))
    assert prune.pruning_plan is None
    prune.on_epoch_begin(0)
    convs = {name: layer for name, layer in net.named_sublayers() if isinstance(layer, nn.Conv2D)}
    plan = prune.pruning_plan["layers"]
    pruned = [name for name in convs if "out_channels" in plan.get(name, {})]
    assert pruned
    for name in pruned:
        assert plan[name]["out_channels"]["size"] == 8
        assert len(plan[name]["out_channels"]["keep"]) == convs[name]._out_channels < 8
