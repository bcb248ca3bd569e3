"""``slimhub demo``: its two shipped recipes on a tiny subset, and its before/after table."""
import os

import pytest

import slimhub
from slimhub.recipe.demo import onnx_session, run_demo, table


def test_table_shows_changes_after_over_before():
    before = {"top1": 0.8, "flops": 4e6, "params": 2e5, "file_bytes": 8e5, "latency_ms": 0.5}
    after = {"top1": 0.7875, "flops": 2e6, "params": 1e5, "file_bytes": 1e5, "latency_ms": 0.25}
    lines = table(before, after).splitlines()
    assert [line.split(" | ")[-1].strip() for line in lines[2:]] == \
        ["-1.25 points", "0.50x", "0.50x", "0.12x", "0.50x"]
    assert lines[2].split(" | ")[1:3] == ["0.8000          ", "0.7875            "]


def test_demo_prunes_quantizes_and_measures_the_deployed_files(tmp_path, capsys):
    before, after = run_demo(str(tmp_path / "demo"), ["data.train_limit=32", "data.eval_limit=32",
                                                      "trainer.batch_size=32", "trainer.verbose=0"])
    out = capsys.readouterr().out
    assert "pruned -50% + int8" in out and out.rstrip().splitlines()[-5].startswith("top-1 accuracy")
    assert 0.45 <= after["flops"] / before["flops"] <= 0.55
    assert after["params"] < 0.6 * before["params"]
    assert after["file_bytes"] < 0.35 * before["file_bytes"]  # half the weights, a quarter the bytes each
    data = slimhub.data.fashion_mnist("test", limit=32)
    session = onnx_session(str(tmp_path / "demo" / "prune_qat" / "model.onnx"))
    logits = session.run(None, {session.get_inputs()[0].name: data.images})[0]
    assert after["top1"] == pytest.approx((logits.argmax(1) == data.labels[:, 0]).mean())
    assert os.path.isfile(tmp_path / "demo" / "baseline" / "model.onnx")
