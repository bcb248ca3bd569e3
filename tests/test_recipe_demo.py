"""``slimhub demo``: the shipped recipe on a tiny subset, its table and its verdicts."""
import os

import numpy as np
import pytest

import slimhub
from slimhub.deploy import load
from slimhub.recipe.demo import run_demo, table, verdicts

BEFORE = {"top1": 0.8, "flops": 4e6, "params": 2e5, "file_bytes": 8e5, "latency_ms": 0.5, "batch_ms": 8.0}
AFTER = {"top1": 0.7875, "flops": 2e6, "params": 1e5, "file_bytes": 1e5, "latency_ms": 0.25, "batch_ms": 3.0}


def test_table_shows_changes_after_over_before():
    lines = table(BEFORE, AFTER, "openvino").splitlines()
    assert lines[0].startswith("openvino")
    assert [line.split(" | ")[-1].strip() for line in lines[2:]] == \
        ["-1.25 points", "0.50x", "0.50x", "0.12x", "0.50x", "0.38x"]
    assert lines[2].split(" | ")[1:3] == ["0.8000          ", "0.7875            "]
    assert verdicts({"openvino": {"baseline": BEFORE, "compressed": AFTER}}, "openvino") == []


def test_disappointing_figures_are_explained_in_one_line_each():
    """The compressed file is compared with the baseline in its fastest runtime."""
    measured = {"openvino": {"baseline": BEFORE, "compressed": {**AFTER, "top1": 0.7699}},
                "onnxruntime": {"baseline": {**BEFORE, "latency_ms": 0.2}, "compressed": AFTER}}
    lines = verdicts(measured, "openvino")
    assert len(lines) == 2 and "more than 2 points" in lines[0]
    assert "at batch 1 the compressed file (openvino, 0.250 ms) is not faster than the baseline in onnxruntime (0.200 ms)" in lines[1]


def test_demo_prunes_quantizes_and_measures_the_deployed_files(tmp_path, capsys):
    runtime, before, after = run_demo(str(tmp_path / "demo"), [
        "data.train_limit=32", "data.eval_limit=32", "trainer.batch_size=32", "trainer.verbose=0"])
    out = capsys.readouterr().out
    assert "pruned -50% + int8" in out and runtime in ("onnxruntime", "openvino")
    assert 0.45 <= after["flops"] / before["flops"] <= 0.55
    assert after["params"] < 0.6 * before["params"]
    assert after["file_bytes"] < 0.35 * before["file_bytes"]  # half the weights, a quarter the bytes each
    data = slimhub.data.fashion_mnist("test", limit=32)
    for name, result in (("prune_qat", after), ("baseline", before)):
        logits = load(str(tmp_path / "demo" / name / "model.onnx"), runtime)(data.images)
        assert result["top1"] == pytest.approx((logits.argmax(1) == data.labels[:, 0]).mean())
    assert os.path.isfile(tmp_path / "demo" / "baseline" / "model.onnx")
    assert np.isfinite(after["latency_ms"]) and after["latency_ms"] > 0
