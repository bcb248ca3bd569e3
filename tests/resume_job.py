"""A training job for the resume test: python resume_job.py SAVE_DIR OUT.npz [KILL_AT_STEP]."""
import os
import signal
import sys

import numpy as np
import paddle

sys.path.insert(0, os.path.dirname(__file__))
import slimhub  # noqa: E402
from slimhub.callbacks import Callback, ModelCheckpoint  # noqa: E402
from conftest import random_data, tiny_net  # noqa: E402


class KillAt(Callback):
    def __init__(self, step):
        super().__init__()
        self.step = step

    def on_train_batch_end(self, step, logs=None):
        if self.model.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


def main(save_dir, out, kill_at=None):
    paddle.seed(3)
    net = tiny_net(dropout=0.3)
    sched = paddle.optimizer.lr.StepDecay(0.05, step_size=1, gamma=0.7)
    opt = paddle.optimizer.Momentum(sched, parameters=net.parameters())
    trainer = slimhub.Trainer(net, opt, paddle.nn.CrossEntropyLoss())
    callbacks = [ModelCheckpoint(save_dir, save_steps=2)]
    if kill_at is not None:
        callbacks.append(KillAt(int(kill_at)))
    trainer.fit(random_data(40), epochs=3, batch_size=8, callbacks=callbacks, save_dir=save_dir,
                resume=True, seed=3, verbose=0)
    np.savez(out, **{k: v.numpy() for k, v in net.state_dict().items()})


if __name__ == "__main__":
    main(*sys.argv[1:])
