"""QAT train step time / float train step time, measured side by side in one run.

    python benchmarks/quant_train_step.py [--batch 32] [--pairs 30]

For a MobileNet-type (mobilenet_v1 x0.25) and a ResNet-type (resnet18) network on 3x32x32
inputs, the same network is trained once in float and once fake-quantized (channel-wise
weights, moving-average activations, 8 bits). Steps alternate one float step and one QAT
step (order swapped every pair), so both see the same machine load; printed are the
median of the per-pair ratios and the ratio of the fastest steps.
"""
import argparse
import os
import statistics
import time

import slimhub  # noqa: E402,F401  (first: sets MKL_DEBUG_CPU_TYPE on AMD CPUs before paddle loads)

import numpy as np  # noqa: E402
import paddle  # noqa: E402
from paddle.vision.models import mobilenet_v1, resnet18  # noqa: E402

from slimhub.quant import quantize  # noqa: E402

MODELS = {
    "mobilenet_v1_x0.25": lambda: mobilenet_v1(scale=0.25, num_classes=10),
    "resnet18": lambda: resnet18(num_classes=10),
}


def setup(make, quantized):
    paddle.seed(0)
    net = make()
    if quantized:
        quantize(net)
    net.train()
    return net, paddle.optimizer.Momentum(0.01, parameters=net.parameters())


def step_time(net, opt, x, y):
    start = time.perf_counter()
    loss = paddle.nn.functional.cross_entropy(net(x), y)
    loss.backward()
    opt.step()
    opt.clear_grad()
    loss.item()
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--pairs", type=int, default=30)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    x = paddle.to_tensor(rng.standard_normal((args.batch, 3, 32, 32)).astype("float32"))
    y = paddle.to_tensor(rng.integers(0, 10, (args.batch, 1)))
    print(f"batch {args.batch}, {args.pairs} step pairs, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")
    for name, make in MODELS.items():
        nets = {q: setup(make, q) for q in (False, True)}
        for q in (False, True):  # warm-up
            step_time(*nets[q], x, y)
        times = {False: [], True: []}
        for i in range(args.pairs):
            for q in ((False, True) if i % 2 == 0 else (True, False)):
                times[q].append(step_time(*nets[q], x, y))
        ratios = [t / f for f, t in zip(times[False], times[True])]
        fp32, qat = (min(times[q]) for q in (False, True))
        print(f"{name:20s} float {fp32 * 1e3:8.1f} ms/step   QAT {qat * 1e3:8.1f} ms/step (fastest)   "
              f"QAT/float: median of pairs {statistics.median(ratios):.3f}x, fastest {qat / fp32:.3f}x")


if __name__ == "__main__":
    main()
