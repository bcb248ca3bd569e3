"""slimhub vs PaddleSlim 2.6 on one pruning step: MobileNetV1 1.0, 224x224, 1000 classes,
every pointwise conv pruned by the same ratio with the L1 criterion, measured in turn in one run.

PaddleSlim 2.6.0 does not run on Paddle 3.3.1 as published: its graph builder calls
``paddle.base.dygraph.base._to_static_mode_guard_`` (renamed ``to_static_mode_guard``) and
reads old-IR programs (``input_arg_names``) while Paddle now builds PIR programs. This
script applies two workarounds from outside (an alias for the renamed function, and
``paddle.pir_utils.OldIrGuard`` around the pruner's construction) and reports what each
library produced: time, MACs after pruning, and the difference between the two pruned
networks' outputs (the same L1 ranking should keep the same channels). PaddleSlim is
installed beside the project, not into it:

    pip install --target /tmp/paddleslim --no-deps paddleslim==2.6.0 pyzmq decorator \
        opencv-python-headless scikit-learn
    PYTHONPATH=/tmp/paddleslim MKL_DEBUG_CPU_TYPE=5 OMP_NUM_THREADS=1 \
        python benchmarks/prune_paddleslim.py [--ratio 0.3] [--repeats 3]
"""
import argparse
import copy
import time

import numpy as np
import paddle
import paddle.base.dygraph.base as dygraph_base
from paddle.vision.models import mobilenet_v1

from slimhub.flops import flops
from slimhub.prune import prune_uniform

SHAPE = (3, 224, 224)


def pruned_conv_weights(model, plan):
    """Names of the weights of the plain convs whose output channels the plan prunes."""
    layers = dict(model.named_sublayers())
    return [layers[name].weight.name for name, entry in plan["layers"].items()
            if "out_channels" in entry and isinstance(layers[name], paddle.nn.Conv2D)
            and layers[name]._groups == 1]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ratio", type=float, default=0.3)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if not hasattr(dygraph_base, "_to_static_mode_guard_"):  # workaround 1 (see the docstring)
        dygraph_base._to_static_mode_guard_ = dygraph_base.to_static_mode_guard
    from paddleslim.dygraph import L1NormFilterPruner

    paddle.seed(0)
    model = mobilenet_v1(scale=1.0, num_classes=1000)
    for layer in model.sublayers():  # He-normal weights, so that the outputs are not ~0
        if isinstance(layer, (paddle.nn.Conv2D, paddle.nn.Linear)):
            fan_in = int(np.prod(layer.weight.shape[1:])) if layer.weight.ndim == 4 else layer.weight.shape[0]
            layer.weight.set_value(paddle.randn(layer.weight.shape) * float(np.sqrt(2 / fan_in)))
    model.eval()
    x = paddle.randn([2, *SHAPE])
    before = flops(model, SHAPE)["flops"]
    times = {"slimhub": [], "paddleslim": []}
    for _ in range(args.repeats):
        ours = copy.deepcopy(model)
        start = time.perf_counter()
        plan = prune_uniform(ours, SHAPE, ratio=args.ratio)
        times["slimhub"].append(time.perf_counter() - start)

        theirs = copy.deepcopy(model)
        names = pruned_conv_weights(theirs, plan)
        start = time.perf_counter()
        with paddle.pir_utils.OldIrGuard():  # workaround 2 (see the docstring)
            pruner = L1NormFilterPruner(theirs, [1, *SHAPE])
        pruner.prune_vars({name: args.ratio for name in names}, 0)
        times["paddleslim"].append(time.perf_counter() - start)
    with paddle.no_grad():
        out_ours, out_theirs = ours(x).numpy(), theirs(x).numpy()
    print(f"MobileNetV1 1.0 224x224, {len(names)} convs pruned by {args.ratio:.0%} (L1), "
          f"{before / 1e6:.1f} M MACs before")
    for name, net in (("slimhub", ours), ("paddleslim", theirs)):
        after = flops(net, SHAPE)
        print(f"  {name:10s} best {min(times[name]):.3f} s  median {np.median(times[name]):.3f} s  "
              f"MACs {after['flops'] / 1e6:.1f} M ({1 - after['flops'] / before:.1%} removed), "
              f"params {after['params'] / 1e6:.3f} M")
    print(f"  paddleslim / slimhub time (best): {min(times['paddleslim']) / min(times['slimhub']):.1f}x")
    print(f"  max |output difference| between the two pruned networks: "
          f"{np.abs(out_ours - out_theirs).max():.3g} (outputs up to {np.abs(out_ours).max():.3g})")


if __name__ == "__main__":
    main()
