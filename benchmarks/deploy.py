"""CPU latency of the zoo's networks as float32, pruned, int8 and pruned+int8 files in
onnxruntime, OpenVINO and paddle.inference, all timed side by side (slimhub.deploy.bench).

    python benchmarks/deploy.py [--runs N | --quick] [--json PATH]

Networks: MobileNetV1 and ResNet18 as in paddle.vision (3x224x224, 1000 classes, random
weights), and the zoo's Fashion-MNIST baselines with their pretrained weights (1x28x28,
the model arguments of their recipes): MobileNetV1 x0.25, ResNet-20 x0.5 and VGG-11
x0.125. Each model runs at batch 1 and 32, on one thread and on all threads; the pruned
models have half the MACs (uniform), the int8 ones are calibrated on random inputs.
A default run took 14 minutes on 2 shared cores, of which the exports take about 5;
--quick times 2 rounds per network. Results and the command: docs/deploy.md.
"""
import argparse
import os
import re
import tempfile

import slimhub  # noqa: F401  (first: sets MKL_DEBUG_CPU_TYPE on AMD CPUs before paddle loads)

from slimhub.checkpoint import write_json  # noqa: E402
from slimhub.deploy import bench, cpu_info  # noqa: E402
from slimhub.prune.graph import DEFAULT_ROUND_TO  # noqa: E402

NETWORKS = (  # (zoo name, pretrained weights, timing rounds)
    ("mobilenet_v1", False, 5),
    ("resnet18", False, 5),
    ("mobilenet_v1.fmnist_baseline", True, 50),
    ("resnet20.fmnist_baseline", True, 50),
    ("vgg11.fmnist_baseline", True, 50),
)
QUICK_RUNS = 2


def default_json():
    kind = re.sub(r"[^a-z0-9]+", "-", cpu_info().kind.lower()).strip("-")
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", f"deploy-{kind}.json")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    rounds = parser.add_mutually_exclusive_group()
    rounds.add_argument("--runs", type=int, default=None,
                        help="timing rounds for every network (default: 5 at 224x224, 50 at 28x28)")
    rounds.add_argument("--quick", action="store_const", const=QUICK_RUNS, dest="runs",
                        help=f"{QUICK_RUNS} rounds for every network")
    parser.add_argument("--round-to", type=int, default=DEFAULT_ROUND_TO,
                        help="channel multiple the pruned variants keep (default: %(default)s)")
    parser.add_argument("--json", default=None,
                        help="results file (default: benchmarks/results/deploy-<cpu kind>.json)")
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, pretrained, runs in NETWORKS:
            models = bench.zoo_variants(name, os.path.join(tmp, name), pretrained=pretrained,
                                        round_to=args.round_to)
            result = bench.benchmark(models, runs=args.runs or runs)
            title = f"{name} {'x'.join(str(s) for s in result['input_shape'])}"
            results[title] = result
            print(bench.format_table(result, title) + "\n", flush=True)
    path = args.json or default_json()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    write_json(results, path)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
