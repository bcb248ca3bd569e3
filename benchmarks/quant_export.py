"""int8 export vs float32: file size and CPU latency, measured side by side in one run.

    python benchmarks/quant_export.py [--size 224] [--runs 50] [--threads 1]

For a MobileNet-type (mobilenet_v1) and a ResNet-type (resnet18) network: the network is
fake-quantized (channel-wise weights, moving-average activations, output quanters on the
convs that feed residual sums), its scales and BatchNorm statistics set by a few
training-mode forward passes, then exported as float32 ONNX (BatchNorm folded) and int8
ONNX, run by onnxruntime and OpenVINO (float32 precision), and as Paddle inference
float32 and paddle_int8. Latency is one image at a time; each run times every format once, in
rotating order, so that they share the machine's load; printed are the median time and
the median of the per-run float32/int8 ratios.
"""
import argparse
import copy
import os
import statistics
import tempfile
import time

import slimhub  # noqa: E402,F401  (first: sets MKL_DEBUG_CPU_TYPE on AMD CPUs before paddle loads)

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
import paddle  # noqa: E402
from paddle import inference  # noqa: E402
from paddle.vision.models import mobilenet_v1, resnet18  # noqa: E402

from slimhub.deploy import load  # noqa: E402
from slimhub.quant import export, quantize, strip_quant  # noqa: E402

MODELS = {"mobilenet_v1": mobilenet_v1, "resnet18": resnet18}


def prepared(make, size):
    paddle.seed(0)
    rng = np.random.default_rng(0)
    batches = [rng.standard_normal((4, 3, size, size)).astype("float32") for _ in range(3)]
    net = quantize(make(num_classes=1000), inputs=batches[0][:1])  # with residual output quanters
    net.train()
    with paddle.no_grad():
        for x in batches:
            net(paddle.to_tensor(x))
    net.eval()
    return net


def onnx_runner(path, threads):
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})[0]


def paddle_runner(prefix, threads):
    model = prefix + (".pdmodel" if os.path.exists(prefix + ".pdmodel") else ".json")
    config = inference.Config(model, prefix + ".pdiparams")
    config.disable_glog_info()
    config.set_cpu_math_library_num_threads(threads)
    predictor = inference.create_predictor(config)
    feed = predictor.get_input_handle(predictor.get_input_names()[0])
    fetch = predictor.get_output_handle(predictor.get_output_names()[0])

    def run(x):
        feed.copy_from_cpu(x)
        predictor.run()
        return fetch.copy_to_cpu()
    return run


def latency(runners, x, runs):
    """``{name: [seconds per run]}`` over ``runs`` runs, each timing every runner once."""
    names = list(runners)
    for name in names:  # warm-up
        runners[name](x)
    times = {name: [] for name in names}
    for r in range(runs):
        for name in names[r % len(names):] + names[:r % len(names)]:
            start = time.perf_counter()
            runners[name](x)
            times[name].append(time.perf_counter() - start)
    return times


def speedup(times, fp32, int8):
    return statistics.median(f / i for f, i in zip(times[fp32], times[int8]))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    spec = [paddle.static.InputSpec([None, 3, args.size, args.size], "float32", "x")]
    x = np.random.default_rng(1).standard_normal((1, 3, args.size, args.size)).astype("float32")
    print(f"input 1x3x{args.size}x{args.size}, {args.threads} thread(s), {args.runs} runs")
    with tempfile.TemporaryDirectory() as tmp:
        for name, make in MODELS.items():
            net = prepared(make, args.size)
            plain = strip_quant(copy.deepcopy(net))
            files = {
                "onnx_fp32": export(plain, f"{tmp}/{name}_fp32", spec, format="onnx")[0],
                "onnx_int8": export(net, f"{tmp}/{name}_int8", spec, format="onnx_int8")[0],
            }
            export(plain, f"{tmp}/{name}_pd_fp32", spec, format="inference")
            export(net, f"{tmp}/{name}_pd_int8", spec, format="paddle_int8")
            runners = {
                "onnx_fp32": onnx_runner(files["onnx_fp32"], args.threads),
                "onnx_int8": onnx_runner(files["onnx_int8"], args.threads),
                "openvino_fp32": load(files["onnx_fp32"], "openvino", args.threads),
                "openvino_int8": load(files["onnx_int8"], "openvino", args.threads),
                "paddle_fp32": paddle_runner(f"{tmp}/{name}_pd_fp32", args.threads),
                "paddle_int8": paddle_runner(f"{tmp}/{name}_pd_int8", args.threads),
            }
            qat = net(paddle.to_tensor(x)).numpy()
            gap = {k: float(np.abs(run(x) - qat).max() / np.abs(qat).max()) for k, run in runners.items()
                   if k.endswith("int8")}
            times = latency(runners, x, args.runs)
            t = {k: statistics.median(v) for k, v in times.items()}
            size = os.path.getsize(files["onnx_int8"]) / os.path.getsize(files["onnx_fp32"])
            print(f"{name}: ONNX size int8/fp32 {size:.3f} "
                  f"({os.path.getsize(files['onnx_int8']) / 2**20:.2f} / "
                  f"{os.path.getsize(files['onnx_fp32']) / 2**20:.2f} MiB)")
            print(f"  onnxruntime  fp32 {t['onnx_fp32'] * 1e3:7.2f} ms  int8 {t['onnx_int8'] * 1e3:7.2f} ms  "
                  f"speed-up {speedup(times, 'onnx_fp32', 'onnx_int8'):.2f}x")
            print(f"  OpenVINO     fp32 {t['openvino_fp32'] * 1e3:7.2f} ms  "
                  f"int8 {t['openvino_int8'] * 1e3:7.2f} ms  "
                  f"speed-up {speedup(times, 'openvino_fp32', 'openvino_int8'):.2f}x")
            print(f"  paddle.inference fp32 {t['paddle_fp32'] * 1e3:7.2f} ms  "
                  f"int8 {t['paddle_int8'] * 1e3:7.2f} ms  "
                  f"speed-up {speedup(times, 'paddle_fp32', 'paddle_int8'):.2f}x")
            print(f"  max |int8 - QAT model| / max |QAT model|: onnxruntime {gap['onnx_int8']:.2e}, "
                  f"OpenVINO {gap['openvino_int8']:.2e}, paddle {gap['paddle_int8']:.2e}")


if __name__ == "__main__":
    main()
