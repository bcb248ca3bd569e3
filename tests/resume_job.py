"""Training jobs for the kill -9 resume tests.

    python resume_job.py SAVE_DIR OUT.npz [KILL_AT_STEP]   one plain job in this process
    python resume_job.py --batch PLAN.json                 many jobs, each in a forked child

A job trains a tiny network with one strategy (plain, prune, prune_gradual, qat, distill,
combined) for 3 epochs of 5 steps, with ``resume=True`` and checkpoints every 2 steps and
at each epoch end, and writes the final weights to OUT.npz (plus ``__resumed_from__``,
the global step it resumed from). ``kill`` kills the job with SIGKILL at a deterministic
point: "step:N" at the end of global step N (before that step's checkpoint), "epoch:E" at
the start of epoch E (after the other callbacks' on_epoch_begin, e.g. a pruning step),
"save:K" in the middle of the K-th checkpoint write (a half-written temporary file stays).

In ``--batch`` mode PLAN.json is a list of chains, each a list of jobs
``{"strategy", "save_dir", "out", "kill"}`` run one after another; two chains run at a
time. Every job runs in a child forked from this process, which has imported Paddle but
run nothing, so each starts as a fresh process would. The report (PLAN.json + ".result")
gives each job's exit ("killed" by SIGKILL, "ok", or the error) and the files then in its save_dir.
OUT.npz also holds the final ``last.pdckpt``'s network and optimizer state (``ckpt.`` keys),
distillation adapters included.
"""
import json
import os
import signal
import sys

import numpy as np
import paddle

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]  # this checkout's slimhub, not an installed one
import slimhub  # noqa: E402
from slimhub.callbacks import (Callback, DistillCallback, ModelCheckpoint, PruneCallback,  # noqa: E402
                               QATCallback)
from conftest import random_data, tiny_net  # noqa: E402

SHAPE = (1, 8, 8)
STRATEGIES = ("plain", "prune", "prune_gradual", "qat", "distill", "combined")


class Student(paddle.nn.Layer):
    """tiny_net inside a Layer: distillation adapters attach to it, not to the Sequential."""

    def __init__(self):
        super().__init__()
        self.body = tiny_net(dropout=0.3)

    def forward(self, x):
        return self.body(x)


class KillAt(Callback):
    def __init__(self, kill):
        super().__init__()
        kind, _, at = (kill or "none:0").partition(":")
        self.kind, self.at = kind, int(at)
        self.resumed_from = None
        if kind == "save":
            real_save, count = paddle.save, [0]

            def dying_save(obj, path, *args, **kwargs):
                count[0] += 1
                if count[0] == self.at:
                    with open(path, "wb") as f:  # the temporary file, half-written
                        f.write(b"half a checkpoint")
                    os.kill(os.getpid(), signal.SIGKILL)
                return real_save(obj, path, *args, **kwargs)
            paddle.save = dying_save

    def on_train_begin(self, logs=None):
        self.resumed_from = self.model.global_step

    def on_epoch_begin(self, epoch, logs=None):
        if self.kind == "epoch" and epoch == self.at:
            os.kill(os.getpid(), signal.SIGKILL)

    def on_train_batch_end(self, step, logs=None):
        if self.kind == "step" and self.model.global_step == self.at:
            os.kill(os.getpid(), signal.SIGKILL)


def distill_losses():
    return [{"type": "soft_label", "teacher": "6", "student": "body.6", "temperature": 2.0},
            {"type": "l2", "teacher": "0", "student": "body.0", "adapter": True, "weight": 0.5}]


def strategy_callbacks(strategy):
    if strategy == "plain":
        return []
    if strategy == "prune":
        return [PruneCallback(0.5, start_epoch=1, input_shape=SHAPE, round_to=1)]
    if strategy == "prune_gradual":
        return [PruneCallback(0.6, steps=2, start_epoch=0, end_epoch=2, input_shape=SHAPE, round_to=1)]
    if strategy == "qat":
        return [QATCallback(start_epoch=1)]
    paddle.seed(7)
    teacher = tiny_net()
    if strategy == "distill":
        return [DistillCallback(teacher, distill_losses())]
    if strategy == "combined":
        return [PruneCallback(0.5, start_epoch=0, input_shape=SHAPE, round_to=1), QATCallback(start_epoch=1),
                DistillCallback(teacher, distill_losses())]
    raise ValueError(f"unknown strategy {strategy!r}; valid: {STRATEGIES}")


def main(save_dir, out, kill=None, strategy="plain"):
    if kill is not None and ":" not in str(kill):
        kill = f"step:{kill}"
    callbacks = strategy_callbacks(strategy)
    paddle.seed(3)
    net = Student()
    sched = paddle.optimizer.lr.StepDecay(0.05, step_size=1, gamma=0.7)
    opt = (paddle.optimizer.Adam(sched, parameters=net.parameters()) if strategy in ("prune", "combined")
           else paddle.optimizer.Momentum(sched, parameters=net.parameters()))
    trainer = slimhub.Trainer(net, opt, paddle.nn.CrossEntropyLoss(), metrics=[paddle.metric.Accuracy(topk=(1, 2))])
    killer = KillAt(kill)
    callbacks += [killer, ModelCheckpoint(save_dir, save_steps=2)]
    trainer.fit(random_data(40), random_data(16, seed=1), epochs=3, batch_size=8, callbacks=callbacks,
                save_dir=save_dir, resume=True, seed=3, verbose=0)
    state = {k: v.numpy() for k, v in net.state_dict().items()}
    saved = paddle.load(os.path.join(save_dir, "last.pdckpt"))
    state.update({f"ckpt.network.{k}": np.asarray(v) for k, v in saved["network"].items()})
    for kind, per_param in saved["optimizer"]["accumulators"].items():
        state.update({f"ckpt.optimizer.{kind}.{k}": np.asarray(v) for k, v in per_param.items()})
    np.savez(out, __resumed_from__=np.array(killer.resumed_from), **state)


def _child(job):
    """Fork a child running ``job``; returns its pid."""
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            main(job["save_dir"], job["out"], job.get("kill"), job["strategy"])
        except BaseException as exc:  # noqa: BLE001  (reported to the parent through the file)
            with open(job["out"] + ".error", "w") as f:
                f.write(f"{type(exc).__name__}: {exc}")
            code = 1
        os._exit(code)
    return pid


def batch(plan_path, parallel=2):
    with open(plan_path) as f:
        chains = [list(c) for c in json.load(f)]
    results, running = {}, {}  # pid -> (chain index, job)
    pending = list(range(len(chains)))
    while pending or running:
        while pending and len(running) < parallel:
            i = pending.pop(0)
            job = chains[i].pop(0)
            running[_child(job)] = (i, job)
        pid, status = os.wait()
        i, job = running.pop(pid)
        if os.WIFSIGNALED(status):
            outcome = "killed" if os.WTERMSIG(status) == signal.SIGKILL else f"signal {os.WTERMSIG(status)}"
        elif os.WEXITSTATUS(status) == 0:
            outcome = "ok"
        else:
            with open(job["out"] + ".error") as f:
                outcome = f"error: {f.read()}"
        files = sorted(os.listdir(job["save_dir"])) if os.path.isdir(job["save_dir"]) else []
        results.setdefault(str(i), []).append({"outcome": outcome, "files": files})
        if chains[i]:
            pending.insert(0, i)
    with open(plan_path + ".result", "w") as f:
        json.dump(results, f)


if __name__ == "__main__":
    if sys.argv[1] == "--batch":
        batch(sys.argv[2])
    else:
        main(*sys.argv[1:])
