"""slimhub callbacks under paddle.Model.fit, and the scalar loggers' files read back."""
import glob
import struct

import numpy as np
import paddle

import slimhub
from slimhub.callbacks import Callback, EarlyStopping, TensorBoardLogger, VisualDLLogger
from conftest import ReplaceClassifier, random_data, tiny_net


def test_callbacks_run_under_paddle_model_fit():
    paddle.seed(0)
    net = tiny_net()
    model = paddle.Model(net)
    model.prepare(paddle.optimizer.Momentum(0.05, parameters=net.parameters()),
                  paddle.nn.CrossEntropyLoss())
    shrink = ReplaceClassifier()
    stop = EarlyStopping(monitor="loss", mode="min", patience=0, min_delta=100)
    model.fit(random_data(), epochs=2, batch_size=16, verbose=0, callbacks=[shrink])
    assert not np.allclose(net[-1].weight.numpy(), shrink.before)  # hapi's optimizer trains it
    model.fit(random_data(), epochs=5, batch_size=16, verbose=0, callbacks=[stop])
    assert stop.wait == 1 and model.stop_training


def read_tfevents(path):
    """Scalars (tag, step, value) from a TFRecord event file, parsed without tensorboard."""
    from tensorboardX.proto import event_pb2
    out = []
    with open(path, "rb") as f:
        data = f.read()
    pos = 0
    while pos < len(data):
        (length,) = struct.unpack("<Q", data[pos:pos + 8])
        event = event_pb2.Event.FromString(data[pos + 12:pos + 12 + length])
        pos += 12 + length + 4
        for v in event.summary.value:
            out.append((v.tag, event.step, v.simple_value))
    return out


def test_loggers_write_loss_metrics_lr_and_logged_scalars(tmp_path):
    class Report(Callback):
        def on_train_batch_begin(self, step, logs=None):
            self.log("flops", 1000 + step)

    steps = []

    class Record(Callback):
        def on_train_batch_end(self, step, logs=None):
            steps.append(logs["step_loss"])

    paddle.seed(0)
    net = tiny_net()
    trainer = slimhub.Trainer(net, paddle.optimizer.SGD(0.1, parameters=net.parameters()),
                              paddle.nn.CrossEntropyLoss(), metrics=[paddle.metric.Accuracy()])
    tb, vdl = str(tmp_path / "tb"), str(tmp_path / "vdl")
    history = trainer.fit(random_data(), epochs=2, batch_size=16, verbose=0,
                          callbacks=[Report(), Record(), TensorBoardLogger(tb), VisualDLLogger(vdl)])
    scalars = read_tfevents(glob.glob(tb + "/events.out.tfevents.*")[0])
    step_loss = [v for t, s, v in scalars if t == "train/step_loss"]
    np.testing.assert_allclose(step_loss, steps, rtol=1e-6)
    assert [v for t, s, v in scalars if t == "train/flops"] == [1000, 1001, 1002] * 2
    np.testing.assert_allclose([v for t, s, v in scalars if t == "epoch/lr"], [0.1, 0.1], rtol=1e-6)
    np.testing.assert_allclose([v for t, s, v in scalars if t == "epoch/acc"], history["acc"], rtol=1e-6)

    from visualdl import LogReader
    reader = LogReader(file_path=glob.glob(vdl + "/vdlrecords.*")[0])
    records = reader.get_data("scalar", "train/step_loss")
    np.testing.assert_allclose([r.value for r in records], steps, rtol=1e-6)
