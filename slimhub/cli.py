"""The ``slimhub`` command: thin wrappers over the library."""
from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("MKL_DEBUG_CPU_TYPE", "5")  # Paddle's MKL takes a slow path on AMD CPUs otherwise


def _demo(args):
    import paddle

    import slimhub
    from slimhub.data import fashion_mnist
    from slimhub.model_zoo import create_model

    train = fashion_mnist("train", limit=args.train_samples)
    test = fashion_mnist("test", limit=args.test_samples)
    paddle.seed(args.seed)
    net = create_model("mobilenet_v1", in_channels=1, num_classes=10, scale=0.25)
    opt = paddle.optimizer.Momentum(args.lr, momentum=0.9, parameters=net.parameters(), weight_decay=4e-5)
    trainer = slimhub.Trainer(net, opt, paddle.nn.CrossEntropyLoss(),
                              metrics=[paddle.metric.Accuracy(topk=(1, 5))])
    print(f"Fashion-MNIST: {len(train)} training and {len(test)} test images; "
          f"MobileNetV1 x0.25, {slimhub.flops(net, (1, 28, 28))['flops'] / 1e6:.2f} M MACs")
    trainer.fit(train, test, epochs=args.epochs, batch_size=args.batch_size, seed=args.seed,
                save_dir=args.save_dir, resume=args.save_dir is not None)
    result = trainer.evaluate(test, batch_size=256)
    print(f"test accuracy: top-1 {result['acc_top1']:.4f}, top-5 {result['acc_top5']:.4f}")


def _flops(args):
    import slimhub
    from slimhub.model_zoo import create_model

    net = create_model(args.model, in_channels=args.input_shape[0], num_classes=args.num_classes)
    counts = slimhub.flops(net, args.input_shape)
    print(f"{args.model}: {counts['flops'] / 1e6:.2f} M MACs, {counts['params'] / 1e6:.3f} M parameters")


def _shape(text):
    try:
        shape = tuple(int(s) for s in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"input shape must be like 3,224,224, got {text!r}")
    if len(shape) != 3 or min(shape) <= 0:
        raise argparse.ArgumentTypeError(f"input shape must be three positive sizes C,H,W, got {text!r}")
    return shape


def build_parser():
    parser = argparse.ArgumentParser(prog="slimhub", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="train a small network on Fashion-MNIST")
    demo.add_argument("--epochs", type=int, default=1)
    demo.add_argument("--train-samples", type=int, default=10000)
    demo.add_argument("--test-samples", type=int, default=2000)
    demo.add_argument("--batch-size", type=int, default=64)
    demo.add_argument("--lr", type=float, default=0.05)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--save-dir", default=None, help="checkpoint folder; an interrupted run resumes")
    demo.set_defaults(func=_demo)

    flops = sub.add_parser("flops", help="count MACs and parameters of a zoo model")
    flops.add_argument("model")
    flops.add_argument("--input-shape", type=_shape, default=(3, 224, 224))
    flops.add_argument("--num-classes", type=int, default=1000)
    flops.set_defaults(func=_flops)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (ValueError, TypeError, KeyError, FileNotFoundError) as exc:
        print(f"slimhub {args.command}: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
