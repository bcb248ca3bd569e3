"""Wall time of one pruning step: MobileNetV1 1.0, 224x224, 1000 classes, -50% MACs.

A step is everything `slimhub.prune.prune_uniform` does: trace the model, order the
channels, find the ratio reaching the MACs target, rank filters (L1), and replace the
parameters. The CPU time of the process is printed beside the wall time: on a shared
machine the difference is time spent waiting for a core. Run:

    OMP_NUM_THREADS=1 python benchmarks/prune_step.py [--repeats 5]
"""
import argparse
import copy
import time

import paddle
from paddle.vision.models import mobilenet_v1

from slimhub.flops import flops
from slimhub.prune import apply_plan, build_graph, make_plan, uniform_order

GOAL_S = 0.3
SHAPE = (3, 224, 224)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--pruned-flops", type=float, default=0.5)
    args = parser.parse_args()

    model = mobilenet_v1(scale=1.0, num_classes=1000)
    model.eval()
    with paddle.no_grad():  # warm up the kernels, as a model in training is warm
        model(paddle.randn([1, *SHAPE]))
    stages = {"trace": [], "target": [], "plan": [], "apply": [], "total": []}
    cpu = []
    for _ in range(args.repeats):
        m = copy.deepcopy(model)
        c0 = time.process_time()
        t0 = time.perf_counter()
        graph = build_graph(m, SHAPE)
        t1 = time.perf_counter()
        removal = graph.removal_for_flops(uniform_order(graph), args.pruned_flops)
        t2 = time.perf_counter()
        plan = make_plan(m, graph, removal, "l1_norm")
        t3 = time.perf_counter()
        apply_plan(m, plan)
        t4 = time.perf_counter()
        cpu.append(time.process_time() - c0)
        for key, value in zip(stages, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t4 - t0)):
            stages[key].append(value)
    before, after = flops(model, SHAPE)["flops"], flops(m, SHAPE)["flops"]
    print(f"MobileNetV1 1.0 224x224: {before / 1e6:.1f} M MACs -> {after / 1e6:.1f} M "
          f"({1 - after / before:.1%} removed), {len(graph.groups)} groups")
    for key, values in stages.items():
        print(f"  {key:7s} best {min(values):.3f} s   median {sorted(values)[len(values) // 2]:.3f} s")
    print(f"  CPU time of the whole step (this process): best {min(cpu):.3f} s   "
          f"median {sorted(cpu)[len(cpu) // 2]:.3f} s")
    best = min(stages["total"])
    print(f"prune step wall time best {best:.3f} s; goal {GOAL_S} s -> {GOAL_S / best:.2f}x the goal's "
          f"budget ({'met' if best <= GOAL_S else 'NOT met'})")


if __name__ == "__main__":
    main()
