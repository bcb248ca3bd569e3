"""slimhub.deploy.bench and `slimhub bench`: interleaved timing, a row for every runtime that
reads each file, the speed-up definitions, JSON round trip and one-line CLI errors."""
import copy
import json
import os
import sys

import numpy as np
import onnx
import paddle
import pytest
from onnx import TensorProto, helper
from paddle import nn

from slimhub.cli import main
from slimhub.deploy import bench, cpu_info
from slimhub.quant import calibrate, export

SHAPE = (1, 8, 8)
SPEC = [paddle.static.InputSpec([None, *SHAPE], "float32", "x")]
FAST = {"batch_sizes": (1, 2), "threads": (1,), "runs": 2}


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def small_net():
    paddle.seed(0)
    return nn.Sequential(nn.Conv2D(1, 4, 3, padding=1), nn.BatchNorm2D(4), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 8 * 8, 3))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """float32 as ONNX, OpenVINO IR and Paddle inference; int8 as ONNX and paddle_int8."""
    folder = tmp_path_factory.mktemp("bench")
    net = small_net()
    net.eval()
    data = [np.random.default_rng(0).standard_normal((8, *SHAPE)).astype("float32")]
    int8 = calibrate(copy.deepcopy(net), data, num_batches=1)
    made = {fmt: export(net, str(folder / "float32"), SPEC, format=fmt)[0] for fmt in ("onnx", "openvino", "inference")}
    made.update({fmt: export(int8, str(folder / "int8"), SPEC, format=fmt)[0] for fmt in ("onnx_int8", "paddle_int8")})
    return made


def test_predictors_are_timed_in_rotating_order_and_paired_ratios_cancel_the_load(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(bench, "_clock", clock)
    calls, warm = [], 3 * bench.WARMUP_CALLS

    def sleeper(name, seconds):
        def run(x):
            timed_round = (len(calls) - warm) // 3
            load = 5 if timed_round % 2 else 1  # the machine's load changes every other round
            calls.append(name)
            clock.now += seconds * load
        return run

    times = bench.time_predictors({"a": sleeper("a", 0.001), "b": sleeper("b", 0.002), "c": sleeper("c", 0.004)},
                                  np.zeros(1), runs=4)
    assert calls[:warm] == sorted(calls[:warm])  # each predictor warmed up before the rounds
    rounds = [calls[warm + 3 * r:warm + 3 * r + 3] for r in range(4)]
    assert rounds == [list("abc"), list("bca"), list("cab"), list("abc")]
    assert times["a"] == pytest.approx([0.001, 0.005, 0.001, 0.005])
    assert bench.speedup(times["c"], times["a"]) == pytest.approx(4.0)
    assert bench.speedup(times["a"], times["b"]) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="runs must be a positive integer, got 0"):
        bench.time_predictors({"a": sleeper("a", 0.001)}, np.zeros(1), runs=0)


def test_speed_ups_are_medians_of_per_round_ratios_against_float32():
    times = {
        ("float32", "onnxruntime", "f32"): [1.0, 3.0, 2.0],
        ("int8", "onnxruntime", "int8"): [2.0, 1.0, 4.0],  # ratios 0.5, 3, 0.5 (ratio of medians: 1)
        ("float32", "openvino", "f32"): [2.0, 2.0, 2.0],
        ("float32", "openvino", "bf16"): [1.0, 0.5, 4.0],  # vs openvino f32: 2, 4, 0.5
        ("other", "paddle", "f32"): [4.0, 4.0, 4.0],  # no float32 in paddle
    }
    rows = {(r["model"], r["runtime"], r["precision"]): r for r in bench.rows_from_times(times, batch=4, threads=None)}
    assert rows[("float32", "onnxruntime", "f32")]["vs_float32_onnxruntime"] == 1.0
    int8 = rows[("int8", "onnxruntime", "int8")]
    assert int8["vs_float32_onnxruntime"] == int8["vs_float32_same_runtime"] == 0.5
    assert int8["median_ms"] == 2000.0 and int8["images_per_s"] == 2.0
    assert int8["batch"] == 4 and int8["threads"] is None
    bf16 = rows[("float32", "openvino", "bf16")]
    assert bf16["vs_float32_same_runtime"] == 2.0
    assert bf16["vs_float32_onnxruntime"] == 1.0  # ratios 1, 6, 0.5
    assert rows[("other", "paddle", "f32")]["vs_float32_same_runtime"] is None
    assert rows[("other", "paddle", "f32")]["vs_float32_onnxruntime"] == 0.5


def test_a_row_for_every_runtime_that_reads_each_file(files):
    models = {"float32": [files["onnx"], files["inference"]], "float32_ir": files["openvino"],
              "int8": [files["onnx_int8"], files["paddle_int8"]]}
    result = bench.benchmark(models, **FAST)
    bf16 = [("float32", "openvino", "bf16"), ("float32_ir", "openvino", "bf16")]
    expected = [("float32", "onnxruntime", "f32"), ("float32", "openvino", "f32"), ("float32", "paddle", "f32"),
                ("float32_ir", "openvino", "f32"), ("int8", "onnxruntime", "int8"), ("int8", "openvino", "int8"),
                ("int8", "paddle", "int8")]
    if cpu_info().flags & set(bench.BF16_FLAGS):
        expected += bf16
    for batch in (1, 2):
        rows = [r for r in result["rows"] if r["batch"] == batch]
        assert sorted((r["model"], r["runtime"], r["precision"]) for r in rows) == sorted(expected)
        assert all(r["threads"] == 1 and r["median_ms"] > 0 for r in rows)
        reference = next(r for r in rows if r["model"] == "float32" and r["runtime"] == "onnxruntime")
        assert reference["vs_float32_onnxruntime"] == reference["vs_float32_same_runtime"] == 1.0
    assert result["input_shape"] == list(SHAPE)  # read from the ONNX file
    assert list(result["versions"]) == ["onnxruntime", "openvino", "paddle"]
    assert result["cpu"]["kind"] == cpu_info().kind
    no_bf16 = bench.benchmark({"float32": files["onnx"]}, runtimes=["openvino"], bf16=False, **FAST)
    assert {(r["runtime"], r["precision"]) for r in no_bf16["rows"]} == {("openvino", "f32")}
    assert list(no_bf16["versions"]) == ["openvino"]


def test_input_shape_is_read_or_asked_for(files, tmp_path):
    dynamic = str(tmp_path / "dynamic.onnx")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 1, "h", "w"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 1, "h", "w"])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), dynamic)
    with pytest.raises(ValueError, match=r"dynamic.onnx has a dynamic input shape \[1, 'h', 'w'\]"):
        bench.benchmark({"relu": dynamic}, **FAST)
    result = bench.benchmark({"relu": dynamic}, runtimes=["onnxruntime"], input_shape=(1, 4, 4), **FAST)
    assert result["input_shape"] == [1, 4, 4]
    with pytest.raises(ValueError, match="input shape of Paddle model .*float32.json is not read"):
        bench.benchmark({"float32": files["inference"]}, **FAST)
    assert bench.file_input_shape(files["openvino"]) == list(SHAPE)


def test_bad_arguments_name_the_value(files, tmp_path):
    with pytest.raises(ValueError, match="unknown runtime 'tensorrt'"):
        bench.benchmark({"float32": files["onnx"]}, runtimes=["tensorrt"])
    with pytest.raises(FileNotFoundError, match="missing.onnx"):
        bench.benchmark({"float32": str(tmp_path / "missing.onnx")})
    with pytest.raises(ValueError, match=r"batch_sizes must be positive integers, got \(0,\)"):
        bench.benchmark({"float32": files["onnx"]}, batch_sizes=(0,))
    with pytest.raises(ValueError, match="bf16 must be 'auto', True or False, got 'yes'"):
        bench.benchmark({"float32": files["onnx"]}, bf16="yes")
    with pytest.raises(ValueError, match="no runtime among \\['paddle'\\] reads"):
        bench.benchmark({"float32": files["onnx"]}, runtimes=["paddle"])


def test_json_round_trip_gives_the_same_table(files):
    result = bench.benchmark({"float32": files["onnx"], "int8": files["onnx_int8"]},
                             runtimes=["onnxruntime"], **FAST)
    again = json.loads(json.dumps(result))
    assert again == result
    table = bench.format_table(again, "tiny")
    assert table == bench.format_table(result, "tiny")
    assert table.splitlines()[:2] == ["tiny", f"CPU: {cpu_info().describe()}"]
    assert "batch 2, 1 thread" in table and "int8" in table


def test_cli_prints_the_table_and_writes_json(files, tmp_path, capsys):
    path = str(tmp_path / "bench.json")
    assert main(["bench", files["onnx"], files["onnx_int8"], "--runtimes", "onnxruntime", "--batch", "1",
                 "--threads", "1,all", "--runs", "2", "--json", path]) == 0
    out = capsys.readouterr().out
    assert f"CPU: {cpu_info().describe()}" in out and "all threads" in out
    with open(path) as f:
        results = json.load(f)
    (result,) = results.values()
    assert {(r["model"], r["threads"]) for r in result["rows"]} == {
        ("float32", 1), ("float32", None), ("int8", 1), ("int8", None)}


def test_cli_benchmarks_a_pruned_zoo_entry_as_itself(tmp_path, capsys):
    work = str(tmp_path / "work")
    assert main(["bench", "resnet20.fmnist_prune_uniform50", "--runtimes", "onnxruntime", "--batch", "1",
                 "--threads", "1", "--runs", "1", "--workdir", work]) == 0
    assert "pruned  onnxruntime  f32" in capsys.readouterr().out
    assert os.path.isfile(os.path.join(work, "resnet20.fmnist_prune_uniform50", "pruned.onnx"))


def test_zoo_architecture_gives_four_variants(tmp_path):
    models = bench.zoo_variants("resnet20", str(tmp_path), input_shape=SHAPE)
    assert list(models) == ["float32", "pruned", "int8", "pruned+int8"]
    for name, paths in models.items():
        assert [os.path.basename(p) for p in paths] == [f"{name}.onnx", f"{name}.pdmodel" if "int8" in name
                                                       else f"{name}.json"]
        assert all(bench.is_int8(p) == name.endswith("int8") for p in paths)
    assert os.path.getsize(models["pruned"][0]) < 0.7 * os.path.getsize(models["float32"][0])


def test_zoo_pruned_variant_keeps_multiples_of_round_to(tmp_path):
    models = bench.zoo_variants("resnet20", str(tmp_path), input_shape=SHAPE, round_to=16)

    def conv_widths(path):
        graph = onnx.load(path).graph
        weights = {n.output[0]: n.attribute[0].t.dims for n in graph.node if n.op_type == "Constant"}
        weights.update({w.name: w.dims for w in graph.initializer})
        return [weights[n.input[1]][0] for n in graph.node if n.op_type == "Conv"]
    full, pruned = conv_widths(models["float32"][0]), conv_widths(models["pruned"][0])
    assert len(full) == len(pruned) and all(p % 16 == 0 and p <= f for p, f in zip(pruned, full))
    assert sum(pruned) < sum(full)


@pytest.mark.parametrize("argv, message", [
    (["--runtimes", "onnxruntime,tensorrt"], "unknown runtime 'tensorrt'"),
    (["--round-to", "0"], "--round-to must be a positive integer (kept channel counts are multiples of it"),
    (["--batch", "1,x"], "--batch must be comma-separated positive integers like 1,32, got '1,x'"),
    (["--threads", "0"], "--threads must be comma-separated positive integers or all like 1,all, got '0'"),
])
def test_cli_bad_options_print_one_line_and_exit_2(files, capsys, argv, message):
    assert main(["bench", files["onnx"], *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("slimhub bench: ") and message in err


@pytest.mark.parametrize("target, message", [
    ("no/such/model.onnx", "model file 'no/such/model.onnx' not found"),
    ("mobilnet_v9", "unknown model architecture 'mobilnet_v9'"),
    ("resnet20.fmnist_nothing", "no pretrained entry 'resnet20.fmnist_nothing'"),
])
def test_cli_bad_targets_print_one_line_and_exit_2(capsys, target, message):
    assert main(["bench", target]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("slimhub bench: ") and message in err


def test_cli_names_a_runtime_that_is_not_installed(files, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # as if not installed
    assert main(["bench", files["onnx"], "--runtimes", "openvino"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "runtime 'openvino' is not installed; pip install openvino==" in err
