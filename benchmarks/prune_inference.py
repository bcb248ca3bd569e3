"""paddle.inference CPU latency, unpruned vs pruned by half the MACs (MobileNetV1 1.0,
224x224, 1000 classes, batch 1), with oneDNN kernels off and on, measured in turn in
one run (load on a shared machine hits all four alike; the minimum is the least
disturbed figure).

    OMP_NUM_THREADS=1 python benchmarks/prune_inference.py [--repeats 50]
"""
import argparse
import os
import statistics
import tempfile
import time

import numpy as np
import paddle
from paddle import inference
from paddle.vision.models import mobilenet_v1

from slimhub.flops import flops
from slimhub.prune import prune_uniform

SHAPE = (3, 224, 224)
GOAL = 1.8


def predictor(prefix, threads, onednn):
    model_file = prefix + (".json" if os.path.exists(prefix + ".json") else ".pdmodel")
    config = inference.Config(model_file, prefix + ".pdiparams")
    config.disable_gpu()
    config.set_cpu_math_library_num_threads(threads)
    if onednn:
        config.enable_mkldnn()
    else:
        config.disable_mkldnn()
    config.disable_glog_info()
    pred = inference.create_predictor(config)
    handle = pred.get_input_handle(pred.get_input_names()[0])
    out = pred.get_output_handle(pred.get_output_names()[0])

    def run(x):
        handle.reshape(x.shape)
        handle.copy_from_cpu(x)
        pred.run()
        return out.copy_to_cpu()
    return run


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--pruned-flops", type=float, default=0.5)
    args = parser.parse_args()

    model = mobilenet_v1(scale=1.0, num_classes=1000)
    model.eval()
    before = flops(model, SHAPE)["flops"]
    spec = [paddle.static.InputSpec([None, *SHAPE], "float32")]
    with tempfile.TemporaryDirectory() as tmp:
        paddle.jit.save(model, os.path.join(tmp, "unpruned"), input_spec=spec)
        prune_uniform(model, SHAPE, pruned_flops=args.pruned_flops)
        after = flops(model, SHAPE)["flops"]
        paddle.jit.save(model, os.path.join(tmp, "pruned"), input_spec=spec)
        runs = {(name, onednn): predictor(os.path.join(tmp, name), args.threads, onednn)
                for onednn in (False, True) for name in ("unpruned", "pruned")}
        x = np.random.default_rng(0).normal(size=(1, *SHAPE)).astype("float32")
        for run in runs.values():  # warm up
            for _ in range(5):
                run(x)
        times = {name: [] for name in runs}
        for _ in range(args.repeats):
            for name, run in runs.items():
                t = time.perf_counter()
                run(x)
                times[name].append(time.perf_counter() - t)
    print(f"MACs: {before / 1e6:.1f} M -> {after / 1e6:.1f} M ({before / after:.2f}x fewer; "
          f"the speed-up limit); goal >= {GOAL}x; {args.repeats} runs each, {args.threads} thread(s)")
    for onednn in (False, True):
        for stat in (min, statistics.median):
            u, p = (stat(times[(n, onednn)]) * 1000 for n in ("unpruned", "pruned"))
            print(f"  oneDNN {'on ' if onednn else 'off'} {stat.__name__:6s}: unpruned {u:7.2f} ms, "
                  f"pruned {p:7.2f} ms, speed-up {u / p:.2f}x ({'met' if u / p >= GOAL else 'NOT met'})")


if __name__ == "__main__":
    main()
