"""Step time of slimhub's Trainer vs a plain Paddle loop vs paddle.Model.fit, interleaved in one run.

    python benchmarks/trainer_overhead.py [--steps 100] [--rounds 5]

Each round trains the same small CNN on the same Fashion-MNIST subset for --steps steps with each of
the three loops, in rotating order; the medians over rounds (the first round is warm-up) are compared.
"""
import argparse
import statistics
import time

import slimhub  # first: sets MKL_DEBUG_CPU_TYPE on AMD CPUs before paddle loads

import paddle  # noqa: E402

from slimhub.data import fashion_mnist  # noqa: E402


def small_cnn():
    return paddle.nn.Sequential(
        paddle.nn.Conv2D(1, 16, 3, padding=1), paddle.nn.BatchNorm2D(16), paddle.nn.ReLU(), paddle.nn.MaxPool2D(2),
        paddle.nn.Conv2D(16, 32, 3, padding=1), paddle.nn.BatchNorm2D(32), paddle.nn.ReLU(), paddle.nn.MaxPool2D(2),
        paddle.nn.Flatten(), paddle.nn.Linear(32 * 7 * 7, 10))


def setup():
    paddle.seed(0)
    net = small_cnn()
    return net, paddle.optimizer.Momentum(0.01, parameters=net.parameters())


def plain(data, batch_size):
    net, opt = setup()
    loss_fn = paddle.nn.CrossEntropyLoss()
    net.train()
    start = time.perf_counter()
    for x, y in paddle.io.DataLoader(data, batch_size=batch_size, shuffle=True):
        loss = loss_fn(net(x), y)
        loss.backward()
        opt.step()
        opt.clear_grad()
        loss.item()
    return time.perf_counter() - start


def hapi(data, batch_size):
    net, opt = setup()
    model = paddle.Model(net)
    model.prepare(opt, paddle.nn.CrossEntropyLoss())
    start = time.perf_counter()
    model.fit(data, epochs=1, batch_size=batch_size, shuffle=True, verbose=0)
    return time.perf_counter() - start


def trainer(data, batch_size):
    net, opt = setup()
    t = slimhub.Trainer(net, opt, paddle.nn.CrossEntropyLoss())
    start = time.perf_counter()
    t.fit(data, epochs=1, batch_size=batch_size, verbose=0)
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    data = fashion_mnist("train", limit=args.steps * args.batch_size)
    loops = {"plain loop": plain, "paddle.Model.fit": hapi, "slimhub.Trainer": trainer}
    times = {name: [] for name in loops}
    names = list(loops)
    for r in range(args.rounds + 1):
        for name in names[r % 3:] + names[:r % 3]:
            elapsed = loops[name](data, args.batch_size)
            if r > 0:
                times[name].append(elapsed / args.steps)
    base = statistics.median(times["plain loop"])
    print(f"{args.steps} steps x {args.rounds} rounds, batch {args.batch_size}, small CNN on Fashion-MNIST")
    for name in names:
        med = statistics.median(times[name])
        print(f"{name:18s} {med * 1000:7.2f} ms/step   ratio to plain loop {med / base:.3f}")


if __name__ == "__main__":
    main()
