"""Sensitivity scan (cached, resumable), allocation by least predicted loss, plot."""
import json

import pytest
from paddle import nn

from slimhub.flops import flops
from slimhub.prune import plot_sensitivity, prune_sensitive, scan_sensitivity

SHAPE = (3, 8, 8)
RATIOS = (0.25, 0.5, 0.75)


def plain_net():
    return nn.Sequential(
        nn.Conv2D(3, 8, 3, padding=1), nn.BatchNorm2D(8), nn.ReLU(),
        nn.Conv2D(8, 16, 3, padding=1), nn.BatchNorm2D(16), nn.ReLU(), nn.MaxPool2D(2),
        nn.AdaptiveAvgPool2D(1), nn.Flatten(), nn.Linear(16, 10))


class Metric:
    """Higher is better: cutting layer 0 costs 10 per unit ratio, layer 3 costs 0.1."""

    def __init__(self):
        self.calls = 0

    def __call__(self, model):
        self.calls += 1
        return -(10 * (1 - model[0]._out_channels / 8) + 0.1 * (1 - model[3]._out_channels / 16))


def test_scan_values_and_model_untouched():
    model = plain_net()
    record = scan_sensitivity(model, SHAPE, Metric(), ratios=RATIOS)
    assert record["baseline"] == 0
    # group "0" has 8 channels: 2, 4, 6 removed; group "3" has 16: 4, 8, 12 removed
    assert record["groups"]["0"]["metrics"] == pytest.approx({"0.25": -2.5, "0.5": -5.0, "0.75": -7.5})
    assert record["groups"]["3"]["metrics"] == pytest.approx({"0.25": -0.025, "0.5": -0.05, "0.75": -0.075})
    assert model[0]._out_channels == 8 and model[3]._out_channels == 16


def test_scan_resumes_from_cache(tmp_path):
    cache = str(tmp_path / "sens.json")
    metric = Metric()
    first = scan_sensitivity(plain_net(), SHAPE, metric, ratios=RATIOS, cache_path=cache)
    assert metric.calls == 1 + 2 * 3  # baseline + every group x ratio
    with open(cache) as f:
        saved = json.load(f)
    assert saved == first
    del saved["groups"]["3"]["metrics"]["0.75"]  # as if interrupted before the last evaluation
    with open(cache, "w") as f:
        json.dump(saved, f)
    metric = Metric()
    assert scan_sensitivity(plain_net(), SHAPE, metric, ratios=RATIOS, cache_path=cache) == first
    assert metric.calls == 1
    with pytest.raises(ValueError, match="criterion"):
        scan_sensitivity(plain_net(), SHAPE, metric, ratios=RATIOS, criterion="fpgm", cache_path=cache)


def test_allocation_prunes_the_insensitive_group_first():
    record = scan_sensitivity(plain_net(), SHAPE, Metric(), ratios=RATIOS)
    base = flops(plain_net(), SHAPE)["flops"]
    # 0.4 of the MACs can go from layer 3 alone (up to its largest scanned ratio, 0.75)
    model = plain_net()
    plan = prune_sensitive(model, SHAPE, record, 0.4, round_to=1)
    assert "0" not in plan["layers"] and model[0]._out_channels == 8
    assert flops(model, SHAPE)["flops"] == pytest.approx(0.6 * base, abs=64 * 9 * 8 + 64 + 16 * 4 + 16 + 10)  # one channel of layer 3
    # 0.7 needs more than layer 3 can give: it stops at 0.75, then layer 0 is cut
    model = plain_net()
    prune_sensitive(model, SHAPE, record, 0.7, round_to=1)
    assert model[3]._out_channels == 4 and model[0]._out_channels < 8


def test_plot_is_a_png(tmp_path):
    record = scan_sensitivity(plain_net(), SHAPE, Metric(), ratios=RATIOS)
    path = plot_sensitivity(record, str(tmp_path / "sens.png"))
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_eval_fn_must_return_a_number():
    with pytest.raises(TypeError, match="eval_fn must return a number"):
        scan_sensitivity(plain_net(), SHAPE, lambda m: "good", ratios=RATIOS)
