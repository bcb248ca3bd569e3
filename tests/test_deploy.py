"""slimhub.deploy: one loader for three runtimes, self-checking exports, and int8 files that
every x86 CPU computes exactly (7-bit weights), checked on the CPU the tests run on."""
import os
import subprocess
import sys
import warnings

import numpy as np
import paddle
import pytest
from paddle import nn

from quant_models import SPEC, batch, qat_trained, small_net
from slimhub.deploy import ExportMismatch, cpu_info, load, verify
from slimhub.export import EXPORTERS
from slimhub.quant import calibrate, export

CHANNELS = 16


def saturating_net(target):
    """1x1 convs whose int8 sums saturate in int16 pairs unless weights are 7-bit: every
    weight is 0.5 (every code the largest) and the calibrated inputs are all ones (never
    negative, so on the unsigned grid: every activation code 255)."""
    net = nn.Sequential(nn.Conv2D(CHANNELS, CHANNELS, 1, bias_attr=False), nn.ReLU(),
                        nn.Conv2D(CHANNELS, 2, 1, bias_attr=False), nn.Flatten())
    for conv in (net[0], net[2]):
        conv.weight.set_value(np.full(conv.weight.shape, 0.5, "float32"))
    calibrate(net, [np.ones((1, CHANNELS, 2, 2), "float32")], num_batches=1, method="abs_max",
              target=target)
    return net


SAT_SPEC = [paddle.static.InputSpec([None, CHANNELS, 2, 2], "float32", "x")]
SAT_X = np.ones((1, CHANNELS, 2, 2), "float32")
SAT_EXPECTED = CHANNELS * 0.5 * (CHANNELS * 0.5)  # conv1 gives 8 everywhere, conv2 sums 16 of them * 0.5


@pytest.fixture(scope="module")
def float_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("float")
    net = small_net()
    net.eval()
    files = {fmt: export(net, str(folder / fmt), SPEC, format=fmt)
             for fmt in ("onnx", "openvino", "inference")}
    return net, files


def test_one_loader_runs_float_files_in_every_runtime(float_files):
    net, files = float_files
    x = batch(4, seed=3)
    expected = net(paddle.to_tensor(x)).numpy()
    runs = [(files["onnx"][0], "onnxruntime"), (files["onnx"][0], "openvino"),
            (files["openvino"][0], "openvino"), (files["inference"][0], "paddle")]
    for path, runtime in runs:
        predictor = load(path, runtime)
        assert predictor.runtime == runtime
        np.testing.assert_allclose(predictor(x), expected, rtol=1e-4, atol=1e-4, err_msg=f"{runtime} {path}")
    assert sorted(os.path.splitext(f)[1] for f in files["openvino"]) == [".bin", ".xml"]


def test_loader_errors_name_the_bad_value(float_files, tmp_path, monkeypatch):
    _, files = float_files
    with pytest.raises(ValueError, match="unknown runtime 'tensorrt'"):
        load(files["onnx"][0], "tensorrt")
    with pytest.raises(FileNotFoundError, match="missing.onnx"):
        load(str(tmp_path / "missing.onnx"))
    with pytest.raises(FileNotFoundError, match="no Paddle inference model"):
        load(str(tmp_path / "nothing"), "paddle")
    with pytest.raises(ValueError, match="onnxruntime reads .onnx files"):
        load(files["openvino"][0], "onnxruntime")
    with pytest.raises(ValueError, match="threads must be a positive integer"):
        load(files["onnx"][0], threads=0)
    monkeypatch.setitem(sys.modules, "openvino", None)  # as if not installed
    with pytest.raises(ImportError, match="'openvino' is not installed; pip install openvino=="):
        load(files["onnx"][0], "openvino")


def test_a_file_that_computes_another_network_is_refused_and_not_written(tmp_path, monkeypatch):
    """The exporter writes the file of a different network: the check must see it."""
    other = small_net()
    paddle.seed(7)
    for layer in (other[0], other[3], other[8], other[10]):
        layer.weight.set_value(np.random.default_rng(7).standard_normal(layer.weight.shape).astype("float32"))
    real = EXPORTERS["onnx"]
    monkeypatch.setitem(EXPORTERS, "onnx", lambda net, prefix, spec: real(other, prefix, spec))
    net = small_net()
    with pytest.raises(ExportMismatch, match=r"in onnxruntime .* agrees with the network on \d+\.\d% of 100"):
        export(net, str(tmp_path / "wrong"), SPEC, format="onnx")
    assert os.listdir(tmp_path) == []
    with pytest.warns(UserWarning, match="does not compute the network on this CPU"):
        files = export(net, str(tmp_path / "kept"), SPEC, format="onnx", on_mismatch="warn")
    assert files == [str(tmp_path / "kept.onnx")]


def test_verify_reports_agreement_per_runtime(tmp_path):
    model = qat_trained()
    path = export(model, str(tmp_path / "int8"), SPEC, format="onnx_int8")[0]
    report = verify(model, path, ["onnxruntime", "openvino"], batch(40, seed=2))
    assert set(report) == {"onnxruntime", "openvino"}
    assert all(r["agreement"] >= 0.99 and r["max_error"] < 0.05 for r in report.values())
    with pytest.raises(ValueError, match="on_mismatch must be one of"):
        verify(model, path, ["onnxruntime"], batch(2), on_mismatch="ignore")


def test_int8_openvino_ir_computes_what_the_onnx_file_does(tmp_path):
    model = qat_trained()
    onnx_file = export(model, str(tmp_path / "int8"), SPEC, format="onnx_int8")[0]
    xml = export(model, str(tmp_path / "ir"), SPEC, format="openvino_int8")[0]
    x = batch(8, seed=4)
    np.testing.assert_allclose(load(xml)(x), load(onnx_file, "openvino")(x), rtol=1e-5, atol=1e-5)
    assert os.path.getsize(xml[:-4] + ".bin") < 0.3 * 4 * sum(p.size for p in model.parameters())


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_default_7bit_weights_are_exact_on_this_cpu(tmp_path, runtime):
    path = export(saturating_net("x86"), str(tmp_path / "w7"), SAT_SPEC, format="onnx_int8",
                  samples=SAT_X)[0]
    out = load(path, runtime)(SAT_X)
    # 7-bit codes: 0.5 -> 63 * (0.5 / 63); inputs 255 * (1 / 255); exact
    np.testing.assert_allclose(out, np.full((1, 8), SAT_EXPECTED), rtol=1e-5)


def test_8bit_weights_are_exact_here_only_with_vnni(tmp_path):
    """With 8-bit weights (target x86_vnni) the int16 pair sums of CPUs without VNNI
    saturate: the export check must then warn, naming the cause; with VNNI it is exact."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        path = export(saturating_net("x86_vnni"), str(tmp_path / "w8"), SAT_SPEC, format="onnx_int8",
                      samples=SAT_X, on_mismatch="warn")[0]
    out = load(path, "onnxruntime")(SAT_X)
    if cpu_info().has_vnni:
        np.testing.assert_allclose(out, np.full((1, 8), SAT_EXPECTED), rtol=1e-5)
    else:
        assert np.abs(out - SAT_EXPECTED).max() > 1
        assert any("without VNNI" in str(w.message) for w in caught)


EMULATED_AVX2 = """
import sys, numpy as np
from slimhub.deploy import load
x = np.ones((1, {c}, 2, 2), "float32")
print(float(np.abs(load(sys.argv[1], "openvino")(x) - {expected}).max()))
"""


def test_openvino_on_an_avx2_only_isa_saturates_8bit_weights_but_not_7bit(tmp_path):
    """oneDNN, inside OpenVINO, can be held to AVX2 (ONEDNN_MAX_CPU_ISA): the int8 path of a
    CPU without VNNI, run on any x86 CPU."""
    errors = {}
    for target in ("x86", "x86_vnni"):
        path = export(saturating_net(target), str(tmp_path / target), SAT_SPEC, format="onnx_int8",
                      samples=SAT_X, on_mismatch="warn")[0]
        script = EMULATED_AVX2.format(c=CHANNELS, expected=SAT_EXPECTED)
        done = subprocess.run([sys.executable, "-c", script, path], capture_output=True, text=True,
                              env={**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2"}, check=True)
        errors[target] = float(done.stdout.split()[-1])
    assert errors["x86"] < 1e-3 and errors["x86_vnni"] > 1, errors
