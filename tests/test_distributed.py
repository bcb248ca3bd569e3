"""Two CPU processes under paddle.distributed.launch."""
import json
import os
import subprocess
import sys

import numpy as np
import paddle

from conftest import random_data, tiny_net

JOB = os.path.join(os.path.dirname(__file__), "dist_job.py")


def test_two_ranks_train_identical_weights_and_reduce_metrics(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", "2",
         "--log_dir", str(tmp_path / "log"), JOB, str(tmp_path)],
        capture_output=True, text=True, timeout=400, cwd=tmp_path)
    logs = "".join(p.read_text() for p in (tmp_path / "log").glob("workerlog.*"))
    assert proc.returncode == 0, logs[-3000:]
    r0, r1 = np.load(tmp_path / "rank0.npz"), np.load(tmp_path / "rank1.npz")
    for k in r0.files:
        np.testing.assert_array_equal(r0[k], r1[k], err_msg=k)
    info = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert info[0]["world"] == 2 and info[0]["eval"] == info[1]["eval"]
    assert info[0]["predict_rows"] == 30  # gathered from both ranks, padding dropped
    # the metric reduced over ranks equals a single process evaluating the same weights
    net = tiny_net()
    net.set_state_dict({k: paddle.to_tensor(r0[k]) for k in r0.files})
    net.eval()
    data = random_data(30)
    logits = net(paddle.to_tensor(data.images)).numpy()
    assert abs(info[0]["eval"]["acc"] - (logits.argmax(1) == data.labels.ravel()).mean()) < 1e-9
    # only rank 0 writes checkpoints
    assert sorted(os.listdir(tmp_path / "ckpt")) == ["last.pdckpt"]
