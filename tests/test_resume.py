"""Exact resume after kill -9, and checkpoints that are never half-written."""
import json
import os
import re
import signal
import subprocess
import sys

import numpy as np
import paddle
import pytest

import slimhub
from slimhub.callbacks import Callback, EarlyStopping
from conftest import random_data, tiny_net

JOB = os.path.join(os.path.dirname(__file__), "resume_job.py")


def run_job(save_dir, out, kill_at=None):
    args = [sys.executable, JOB, str(save_dir), str(out)] + ([str(kill_at)] if kill_at else [])
    return subprocess.run(args, capture_output=True, text=True, timeout=300)


def test_killed_run_resumes_to_identical_weights(tmp_path):
    # 5 steps per epoch, 3 epochs; killed at step 9 (mid-epoch 2) after the checkpoint of step 8
    killed = run_job(tmp_path / "a", tmp_path / "a.npz", kill_at=9)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert not (tmp_path / "a.npz").exists()
    resumed = run_job(tmp_path / "a", tmp_path / "a.npz")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    straight = run_job(tmp_path / "b", tmp_path / "b.npz")
    assert straight.returncode == 0, straight.stderr[-2000:]
    a, b = np.load(tmp_path / "a.npz"), np.load(tmp_path / "b.npz")
    assert sorted(a.files) == sorted(b.files)
    assert (int(a["__resumed_from__"]), int(b["__resumed_from__"])) == (8, 0)
    for k in [k for k in a.files if k != "__resumed_from__"]:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


# (strategy, kill point, global step of the checkpoint the resumed run starts from).
# Checkpoints are written at global steps 2, 4, 6, 8, 10, 12, 14 and at each epoch's end
# (steps 5, 10, 15); "step:N" kills before step N's checkpoint, "epoch:E" at the start of
# epoch E (after its pruning or quantization), "save:K" in the middle of the K-th file write
# (the 4th is epoch 1's last.pdckpt, after its best.pdckpt).
KILLS = [
    ("plain", "step:1", 0),            # before any checkpoint
    ("plain", "step:7", 6),            # mid-epoch
    ("plain", "epoch:2", 10),          # between epochs
    ("plain", "save:4", 4),            # during a checkpoint write: a half temporary file stays
    ("prune", "step:4", 2),            # before the pruning step (epoch 1)
    ("prune", "epoch:1", 5),           # right after the pruning step, before a pruned checkpoint
    ("prune", "step:9", 8),            # after the pruned network was checkpointed
    ("prune_gradual", "step:3", 2),    # between the two pruning steps (epochs 0 and 2)
    ("prune_gradual", "epoch:2", 10),  # right after the second pruning step
    ("qat", "epoch:1", 5),             # right after quantization, before a quantized step
    ("qat", "step:7", 6),              # during the first quantized epoch
    ("qat", "step:12", 10),            # in the last epoch
    ("distill", "step:1", 0),          # adapters created at step 1, never checkpointed
    ("distill", "step:8", 6),          # mid-distillation
    ("distill", "epoch:2", 10),        # between distilled epochs
    ("combined", "epoch:1", 5),        # pruned at epoch 0, quantized at epoch 1, distilled all along
    ("combined", "step:12", 10),
]
TMP = re.compile(r"\.tmp-[a-z0-9_]{8}")


@pytest.fixture(scope="module")
def kill_runs(tmp_path_factory):
    """Every kill case (killed, then resumed) and one uninterrupted run per strategy, run by
    one job process that forks a fresh child for each run."""
    root = tmp_path_factory.mktemp("kills")
    chains = [[{"strategy": s, "save_dir": str(root / f"{s}-straight"), "out": str(root / f"{s}-straight.npz")}]
              for s in sorted({k[0] for k in KILLS})]
    for i, (strategy, kill, _) in enumerate(KILLS):
        job = {"strategy": strategy, "save_dir": str(root / f"case{i}"), "out": str(root / f"case{i}.npz")}
        chains.append([{**job, "kill": kill}, job])
    plan = root / "plan.json"
    plan.write_text(json.dumps(chains))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, JOB, "--batch", str(plan)], capture_output=True, text=True,
                          timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return root, json.loads((root / "plan.json.result").read_text())


@pytest.mark.parametrize("case", range(len(KILLS)), ids=[f"{s}-{k}" for s, k, _ in KILLS])
def test_kill_9_resumes_bit_identical(kill_runs, case):
    root, results = kill_runs
    strategy, kill, resumed_from = KILLS[case]
    killed, resumed = results[str(case + len({k[0] for k in KILLS}))]
    assert killed["outcome"] == "killed" and resumed["outcome"] == "ok", (killed, resumed)
    stale = [f for f in killed["files"] if TMP.fullmatch(f)]
    assert len(stale) == (1 if kill.startswith("save:") else 0), killed["files"]
    assert not [f for f in resumed["files"] if f.startswith(".tmp")], resumed["files"]
    a, b = np.load(root / f"case{case}.npz"), np.load(root / f"{strategy}-straight.npz")
    assert int(a["__resumed_from__"]) == resumed_from and int(b["__resumed_from__"]) == 0
    assert sorted(a.files) == sorted(b.files)
    a_files = [k for k in a.files if k != "__resumed_from__"]
    assert any(k.startswith("ckpt.optimizer.") for k in a.files)
    if strategy in ("distill", "combined"):
        assert any("distill_adapters" in k for k in a.files)  # the checkpoint holds the adapters
    if strategy in ("prune", "prune_gradual", "combined"):
        assert a["body.0.weight"].shape[0] < 4  # pruned
    for k in a_files:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_interrupted_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    paddle.seed(0)
    net = tiny_net()
    trainer = slimhub.Trainer(net, paddle.optimizer.SGD(0.1, parameters=net.parameters()),
                              paddle.nn.CrossEntropyLoss())
    trainer.fit(random_data(16), epochs=1, batch_size=8, save_dir=str(tmp_path), verbose=0)
    before = (tmp_path / "last.pdckpt").read_bytes()
    real_save = paddle.save

    def dying_save(obj, path, *a, **k):
        with open(path, "wb") as f:
            f.write(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(paddle, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        trainer.save(str(tmp_path / "last.pdckpt"))
    monkeypatch.setattr(paddle, "save", real_save)
    assert (tmp_path / "last.pdckpt").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pdckpt"]


def test_callback_state_travels_in_checkpoints(tmp_path):
    class Counter(Callback):
        def __init__(self):
            super().__init__()
            self.batches = 0

        def on_train_batch_end(self, step, logs=None):
            self.batches += 1

        def state_dict(self):
            return {"batches": self.batches}

        def set_state_dict(self, state):
            self.batches = state["batches"]

    paddle.seed(0)
    net = tiny_net()
    trainer = slimhub.Trainer(net, paddle.optimizer.SGD(0.1, parameters=net.parameters()),
                              paddle.nn.CrossEntropyLoss())
    trainer.fit(random_data(16), random_data(8), epochs=2, batch_size=8, verbose=0,
                callbacks=[Counter(), EarlyStopping(patience=5)], save_dir=str(tmp_path))
    counter = Counter()
    stopper = EarlyStopping(patience=5)
    trainer.fit(random_data(16), random_data(8), epochs=2, batch_size=8, verbose=0,
                callbacks=[counter, stopper], save_dir=str(tmp_path), resume=True)
    assert counter.batches == 4  # restored, and nothing left to train
    assert stopper.best is not None
    with pytest.raises(ValueError, match="Counter.0"):
        trainer.fit(random_data(16), epochs=3, batch_size=8, verbose=0,
                    save_dir=str(tmp_path), resume=True)


def test_resume_in_process_with_other_parameter_names(tmp_path):
    """Optimizer state is keyed by structured names, so Adam resumes although Paddle's
    per-process parameter names differ between the two networks."""
    def run(epochs, resume, shift_names=False):
        if shift_names:
            paddle.nn.Linear(2, 2)  # takes the next automatic parameter names
        paddle.seed(0)
        net = tiny_net()
        t = slimhub.Trainer(net, paddle.optimizer.Adam(0.01, parameters=net.parameters()),
                            paddle.nn.CrossEntropyLoss())
        t.fit(random_data(), epochs=epochs, batch_size=16, verbose=0, seed=0,
              save_dir=str(tmp_path / ("r" if resume else "s")), resume=resume)
        return net

    straight = run(2, False)
    run(1, True)
    resumed = run(2, True, shift_names=True)
    assert [p.name for p in resumed.parameters()] != [p.name for p in straight.parameters()]
    for (k, a), b in zip(resumed.state_dict().items(), straight.state_dict().values()):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=k)
