"""Exact resume after kill -9, and checkpoints that are never half-written."""
import os
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
    for k in a.files:
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
