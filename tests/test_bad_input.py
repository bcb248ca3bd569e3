"""Bad arguments fail with an error naming the argument."""
import paddle
import pytest

import slimhub
from slimhub.callbacks import Callback
from conftest import random_data, tiny_net


def trainer(**kw):
    net = tiny_net()
    args = dict(optimizer=paddle.optimizer.SGD(0.1, parameters=net.parameters()),
                loss=paddle.nn.CrossEntropyLoss())
    args.update(kw)
    return slimhub.Trainer(net, **args)


@pytest.mark.parametrize("epochs", [0, -1, 1.5, True])
def test_epochs_must_be_positive_int(epochs):
    with pytest.raises(ValueError, match="epochs must be a positive integer"):
        trainer().fit(random_data(), epochs=epochs, verbose=0)


def test_loss_metric_model_optimizer_types():
    with pytest.raises(TypeError, match="loss must be callable"):
        trainer(loss="cross_entropy")
    with pytest.raises(TypeError, match="metrics must be paddle.metric.Metric"):
        trainer(metrics=["accuracy"])
    with pytest.raises(TypeError, match="optimizer must be a paddle.optimizer.Optimizer"):
        trainer(optimizer="sgd")
    with pytest.raises(TypeError, match="model must be a paddle.nn.Layer"):
        slimhub.Trainer(lambda x: x)


def test_samples_must_be_pairs():
    class Triples(paddle.io.Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return random_data()[i] + (0,)

    with pytest.raises(ValueError, match=r"train_data: each sample must be an \(input, label\) pair; got 3 fields"):
        trainer().fit(Triples(), epochs=1, verbose=0)
    with pytest.raises(TypeError, match="must be a paddle.io.Dataset or paddle.io.DataLoader"):
        trainer().fit([(1, 2)], epochs=1, verbose=0)


def test_callback_hook_returns():
    class Returns(Callback):
        def on_epoch_begin(self, epoch, logs=None):
            return "stop"

    with pytest.raises(TypeError, match="Returns.on_epoch_begin returned str"):
        trainer().fit(random_data(), epochs=1, verbose=0, callbacks=[Returns()])

    class BadLoss(Callback):
        def on_loss(self, inputs, outputs, labels):
            return [outputs.sum()]

    with pytest.raises(TypeError, match="BadLoss.on_loss must return None or a dict"):
        trainer().fit(random_data(), epochs=1, verbose=0, callbacks=[BadLoss()])

    with pytest.raises(TypeError, match="not a paddle.callbacks.Callback"):
        trainer().fit(random_data(), epochs=1, verbose=0, callbacks=[object()])


def test_resume_needs_save_dir_and_mismatched_checkpoint(tmp_path):
    with pytest.raises(ValueError, match="resume=True needs save_dir"):
        trainer().fit(random_data(), epochs=1, verbose=0, resume=True)
    t = trainer()
    t.fit(random_data(), epochs=1, verbose=0, save_dir=str(tmp_path))
    other = paddle.nn.Sequential(paddle.nn.Flatten(), paddle.nn.Linear(64, 3))
    t2 = slimhub.Trainer(other, paddle.optimizer.SGD(0.1, parameters=other.parameters()),
                         paddle.nn.CrossEntropyLoss())
    with pytest.raises(ValueError, match="checkpoint does not fit this network"):
        t2.fit(random_data(), epochs=2, verbose=0, save_dir=str(tmp_path), resume=True)
    (tmp_path / "junk.pdckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.pdckpt"):
        t.load(str(tmp_path / "junk.pdckpt"))
