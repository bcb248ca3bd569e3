"""CPU latency of pruned networks in onnxruntime, OpenVINO and paddle.inference (batch 1,
3x224x224, random weights): unpruned vs pruned by half the MACs (L1) with the kept channels
rounded to each ``--round-to`` multiple (1: no rounding), by each ``--methods`` allocation:
``uniform`` (one ratio for all groups) and ``sensitive`` (slimhub.prune.prune_sensitive).
With random weights there is no accuracy to scan, so the sensitivity scan scores a network by
how close its outputs stay to the unpruned network's on two random images (minus their
relative L2 distance); it yields an uneven allocation, which is what the timing needs.
Every network and runtime is timed in the same interleaved rounds
(slimhub.deploy.bench.time_predictors). Speed-ups against the unpruned network in the same
runtime: the ratio of the minima (the least disturbed calls on a shared machine) and the
median of the per-round ratios.

    OMP_NUM_THREADS=1 python benchmarks/prune_inference.py [--models mobilenet_v1 resnet18]
        [--round-to 1 8 16] [--methods uniform sensitive] [--runs 30]
"""
import argparse
import copy
import os
import statistics
import tempfile

import numpy as np
import paddle

from slimhub.deploy import load
from slimhub.deploy.bench import speedup, time_predictors
from slimhub.deploy.cpu import cpu_info
from slimhub.flops import flops
from slimhub.model_zoo import create_model
from slimhub.prune import prune_sensitive, prune_uniform, scan_sensitivity
from slimhub.quant import export

SHAPE = (3, 224, 224)
RUNTIMES = ("onnxruntime", "openvino", "paddle")
FORMATS = {"onnxruntime": "onnx", "openvino": "onnx", "paddle": "inference"}  # the file each reads


def fidelity(reference):
    """``eval_fn`` for a sensitivity scan without data: minus the relative L2 distance
    between a network's outputs and ``reference``'s on two fixed random images."""
    x = paddle.to_tensor(np.random.default_rng(1).standard_normal((2, *SHAPE)).astype("float32"))
    with paddle.no_grad():
        want = reference(x)

    def score(network):
        network.eval()
        with paddle.no_grad():
            return -float(paddle.linalg.norm(network(x) - want) / paddle.linalg.norm(want))
    return score


def variants(name, pruned_flops, round_tos, methods):
    """``{variant: network}``: the unpruned zoo network and one pruned copy per method and
    multiple."""
    paddle.seed(0)
    network = create_model(name)
    network.eval()
    out = {"unpruned": network}
    record = scan_sensitivity(network, SHAPE, fidelity(network)) if "sensitive" in methods else None
    for method in methods:
        for round_to in round_tos:
            pruned = copy.deepcopy(network)
            if method == "uniform":
                prune_uniform(pruned, SHAPE, pruned_flops=pruned_flops, round_to=round_to)
            else:
                prune_sensitive(pruned, SHAPE, record, pruned_flops, round_to=round_to)
            out[f"{method} x{round_to}"] = pruned
    return out


def off_multiple(network, multiple=8):
    """Conv2D layers whose output channel count is not a multiple of ``multiple``, and all."""
    convs = [layer for layer in network.sublayers() if isinstance(layer, paddle.nn.Conv2D)]
    return sum(layer._out_channels % multiple != 0 for layer in convs), len(convs)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["mobilenet_v1", "resnet18"])
    parser.add_argument("--round-to", nargs="+", type=int, default=[1, 8, 16])
    parser.add_argument("--methods", nargs="+", default=["uniform", "sensitive"],
                        choices=["uniform", "sensitive"])
    parser.add_argument("--runtimes", nargs="+", default=list(RUNTIMES), choices=RUNTIMES)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--pruned-flops", type=float, default=0.5)
    args = parser.parse_args()

    print(f"CPU: {cpu_info().describe()}; {args.threads} thread(s), batch 1, "
          f"median of {args.runs} interleaved rounds")
    spec = [paddle.static.InputSpec([None, *SHAPE], "float32", "x")]
    x = np.random.default_rng(0).standard_normal((1, *SHAPE)).astype("float32")
    for model in args.models:
        networks = variants(model, args.pruned_flops, args.round_to, args.methods)
        base = flops(networks["unpruned"], SHAPE)["flops"]
        with tempfile.TemporaryDirectory() as tmp:
            predictors = {}
            for variant, network in networks.items():
                prefix = os.path.join(tmp, variant.replace(" ", "_"))
                files = {fmt: export(network, prefix, spec, format=fmt)[0]
                         for fmt in {FORMATS[rt] for rt in args.runtimes}}
                for runtime in args.runtimes:
                    predictors[(variant, runtime)] = load(files[FORMATS[runtime]], runtime,
                                                          threads=args.threads)
            times = time_predictors(predictors, x, args.runs)
        print(f"\n{model}: {base / 1e6:.1f} M MACs unpruned")
        print(f"  {'variant':<14} {'MACs':>8} {'vs goal':>8} {'convs off x8':>12}  {'runtime':<11} "
              f"{'min ms':>8} {'median ms':>9} {'speed-up (min)':>14} {'(per round)':>11}")
        for variant, network in networks.items():
            macs = flops(network, SHAPE)["flops"]
            goal = (1 - args.pruned_flops) * base if variant != "unpruned" else base
            odd, convs = off_multiple(network)
            for runtime in args.runtimes:
                own, ref = times[(variant, runtime)], times[("unpruned", runtime)]
                print(f"  {variant:<14} {macs / 1e6:>7.1f}M {macs / goal - 1:>+8.2%} {odd:>6}/{convs:<5}  "
                      f"{runtime:<11} {1e3 * min(own):>8.2f} {1e3 * statistics.median(own):>9.2f} "
                      f"{min(ref) / min(own):>13.2f}x {speedup(ref, own):>10.2f}x")


if __name__ == "__main__":
    main()
