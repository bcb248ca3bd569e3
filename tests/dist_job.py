"""Two-process training job for the distributed test: launched by paddle.distributed.launch."""
import json
import os
import sys

import numpy as np
import paddle
import paddle.distributed as dist

sys.path.insert(0, os.path.dirname(__file__))
import slimhub  # noqa: E402
from conftest import random_data, tiny_net  # noqa: E402


def main(out_dir):
    paddle.seed(0)
    net = tiny_net()
    trainer = slimhub.Trainer(net, paddle.optimizer.SGD(0.1, parameters=net.parameters()),
                              paddle.nn.CrossEntropyLoss(), metrics=[paddle.metric.Accuracy()])
    data = random_data(30)
    trainer.fit(data, epochs=2, batch_size=6, shuffle=False, verbose=0, save_dir=os.path.join(out_dir, "ckpt"))
    result = trainer.evaluate(data, batch_size=4)
    np.savez(os.path.join(out_dir, f"rank{dist.get_rank()}.npz"),
             **{k: v.numpy() for k, v in net.state_dict().items()})
    with open(os.path.join(out_dir, f"rank{dist.get_rank()}.json"), "w") as f:
        json.dump({"eval": result, "world": dist.get_world_size(),
                   "predict_rows": int(trainer.predict(data).shape[0])}, f)


if __name__ == "__main__":
    main(sys.argv[1])
