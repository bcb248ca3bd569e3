"""Bad arguments fail with a one-line error that names the argument and the bad value,
raised by slimhub itself (no traceback from inside Paddle)."""
import os

import numpy as np
import paddle
import pytest
from paddle import nn

import slimhub
from slimhub.callbacks import (Callback, DistillCallback, EarlyStopping, LRSchedulerStep, ModelCheckpoint,
                               NaNGuard, PruneCallback, QATCallback)
from slimhub.data import ArrayDataset
from conftest import random_data, tiny_net


def trainer(**kw):
    net = tiny_net()
    args = dict(optimizer=paddle.optimizer.SGD(0.1, parameters=net.parameters()),
                loss=paddle.nn.CrossEntropyLoss())
    args.update(kw)
    return slimhub.Trainer(net, **args)


def fit(**kw):
    args = dict(train_data=random_data(16), verbose=0)
    args.update(kw)
    return lambda: trainer().fit(**args)


class Stream(paddle.io.IterableDataset):
    def __iter__(self):
        return iter(random_data(4))


IMAGES = np.zeros((4, 1, 8, 8), "float32")

# (what, call, error type, message: a regex that names the argument and the bad value)
BAD = [
    # Trainer(...)
    ("model", lambda: slimhub.Trainer(lambda x: x), TypeError,
     r"^Trainer: model must be a paddle.nn.Layer, got function$"),
    ("optimizer", lambda: trainer(optimizer="sgd"), TypeError,
     r"optimizer must be a paddle.optimizer.Optimizer, got str$"),
    ("other network's optimizer", lambda: trainer(optimizer=paddle.optimizer.SGD(
        0.1, parameters=nn.Linear(2, 2).parameters())), ValueError, r"optimizer holds none of the model's parameters"),
    ("loss", lambda: trainer(loss="cross_entropy"), TypeError, r"loss must be callable .* got 'cross_entropy'$"),
    ("metrics", lambda: trainer(metrics=["accuracy"]), TypeError,
     r"metrics must be paddle.metric.Metric instances, got str$"),
    ("amp", lambda: trainer(amp="O3"), ValueError, r"^Trainer: amp must be False, 'O1' or 'O2', got 'O3'$"),
    ("static", lambda: trainer(static="yes"), TypeError, r"^Trainer: static must be True or False, got 'yes'$"),
    # Trainer.fit(...)
    ("epochs=0", fit(epochs=0), ValueError, r"^Trainer.fit: epochs must be a positive integer, got 0$"),
    ("epochs=1.5", fit(epochs=1.5), ValueError, r"^Trainer.fit: epochs must be a positive integer, got 1.5$"),
    ("epochs=True", fit(epochs=True), ValueError, r"^Trainer.fit: epochs must be a positive integer, got True$"),
    ("batch_size", fit(batch_size=-8), ValueError, r"^Trainer.fit: batch_size must be a positive integer, got -8$"),
    ("eval_freq", fit(eval_freq="1"), ValueError, r"^Trainer.fit: eval_freq must be a positive integer, got '1'$"),
    ("shuffle", fit(shuffle="no"), TypeError, r"^Trainer.fit: shuffle must be True or False, got 'no'$"),
    ("drop_last", fit(drop_last=None), TypeError, r"^Trainer.fit: drop_last must be True or False, got None$"),
    ("resume=1", fit(resume=1), TypeError, r"^Trainer.fit: resume must be True or False, got 1$"),
    ("resume without save_dir", fit(resume=True), ValueError, r"^Trainer.fit: resume=True needs save_dir"),
    ("seed=-1", fit(seed=-1), ValueError, r"^Trainer.fit: seed must be an integer in \[0, 4294967295\], got -1$"),
    ("seed=2**32", fit(seed=2**32), ValueError,
     r"^Trainer.fit: seed must be an integer in \[0, 4294967295\], got 4294967296$"),
    ("verbose", fit(verbose=3), ValueError, r"^Trainer.fit: verbose must be 0, 1 or 2, got 3$"),
    ("num_workers", fit(num_workers=-1), ValueError, r"^Trainer.fit: num_workers must be an integer >= 0, got -1$"),
    ("callbacks", fit(callbacks="ProgressBar"), TypeError,
     r"^Trainer.fit: callbacks must be a list of callbacks, got str$"),
    ("callbacks=[object()]", fit(callbacks=[object()]), TypeError,
     r"<object object at .*> is a object, not a paddle.callbacks.Callback"),
    ("save_dir=123", fit(save_dir=123), TypeError, r"^Trainer.fit: save_dir must be a folder path \(str\), got 123$"),
    ("save_dir=''", fit(save_dir=""), ValueError,
     r"^Trainer.fit: save_dir must be a folder path, got an empty string$"),
    ("train_data list", fit(train_data=[(IMAGES[0], 0)]), TypeError,
     r"^Trainer.fit: train_data must be a paddle.io.Dataset or paddle.io.DataLoader, got list$"),
    ("train_data array", fit(train_data=IMAGES), TypeError, r"^Trainer.fit: train_data must be .* got ndarray$"),
    ("train_data iterable", fit(train_data=Stream()), TypeError,
     r"^Trainer.fit: train_data is an IterableDataset, which has no length; wrap it in a paddle.io.DataLoader$"),
    ("eval_data", fit(eval_data="test"), TypeError, r"^Trainer.fit: eval_data must be .* got str$"),
    # evaluate / predict
    ("evaluate batch_size", lambda: trainer().evaluate(random_data(4), batch_size=0), ValueError,
     r"^Trainer.evaluate: batch_size must be a positive integer, got 0$"),
    ("evaluate eval_data", lambda: trainer().evaluate(None), TypeError,
     r"^Trainer.evaluate: eval_data must be a paddle.io.Dataset or paddle.io.DataLoader, got NoneType$"),
    ("evaluate without loss", lambda: trainer(loss=None).evaluate(random_data(4)), ValueError,
     r"^Trainer.evaluate needs a loss or metrics"),
    ("predict num_workers", lambda: trainer().predict(random_data(4), num_workers=1.5), ValueError,
     r"^Trainer.predict: num_workers must be an integer >= 0, got 1.5$"),
    ("predict data", lambda: trainer().predict("images/"), TypeError, r"^Trainer.predict: data must be .* got str$"),
    # callbacks
    ("ModelCheckpoint save_dir", lambda: ModelCheckpoint(None), TypeError,
     r"^ModelCheckpoint: save_dir must be a folder path \(str\), got None$"),
    ("ModelCheckpoint mode", lambda: ModelCheckpoint("d", mode="best"), ValueError,
     r"mode must be 'max' or 'min', got 'best'$"),
    ("ModelCheckpoint save_steps", lambda: ModelCheckpoint("d", save_steps=0), ValueError,
     r"^ModelCheckpoint: save_steps must be a positive integer, got 0$"),
    ("ModelCheckpoint monitor", lambda: ModelCheckpoint("d", monitor=3), TypeError,
     r"monitor must be the name of a log entry .* got 3$"),
    ("EarlyStopping patience", lambda: EarlyStopping(patience=-1), ValueError,
     r"^EarlyStopping: patience must be an integer >= 0, got -1$"),
    ("EarlyStopping min_delta", lambda: EarlyStopping(min_delta=float("nan")), ValueError,
     r"^EarlyStopping: min_delta must be a finite number >= 0, got nan$"),
    ("EarlyStopping mode", lambda: EarlyStopping(mode="up"), ValueError, r"mode must be 'max' or 'min', got 'up'$"),
    ("NaNGuard action", lambda: NaNGuard("ignore"), ValueError,
     r"^NaNGuard: action must be one of \['raise', 'stop', 'warn'\], got 'ignore'$"),
    ("NaNGuard stream", lambda: NaNGuard(stream="stderr"), TypeError,
     r"stream must be a text stream with .write\(\), got 'stderr'$"),
    ("LRSchedulerStep by_step", lambda: LRSchedulerStep(by_step="yes"), TypeError,
     r"^LRSchedulerStep: by_step must be True or False, got 'yes'$"),
    ("PruneCallback pruned_flops", lambda: PruneCallback(1.5, input_shape=(1, 8, 8)), ValueError,
     r"^PruneCallback: pruned_flops must be a number in \(0, 1\), got 1.5$"),
    ("PruneCallback pruned_flops=True", lambda: PruneCallback(True, input_shape=(1, 8, 8)), ValueError,
     r"pruned_flops must be a number in \(0, 1\), got True$"),
    ("PruneCallback method", lambda: PruneCallback(method="random", input_shape=(1, 8, 8)), ValueError,
     r"^PruneCallback: method must be one of \['sensitive', 'uniform'\], got 'random'$"),
    ("PruneCallback steps", lambda: PruneCallback(steps=0, input_shape=(1, 8, 8)), ValueError,
     r"^PruneCallback: steps must be an integer in \[1, 10000\], got 0$"),
    ("PruneCallback start_epoch", lambda: PruneCallback(start_epoch=-1, input_shape=(1, 8, 8)), ValueError,
     r"^PruneCallback: start_epoch must be an integer in \[0, 9999\], got -1$"),
    ("PruneCallback end_epoch", lambda: PruneCallback(steps=2, input_shape=(1, 8, 8)), ValueError,
     r"^PruneCallback: 2 pruning steps need end_epoch \(the epoch of the last step, at least "
     r"start_epoch \+ 1: one step per epoch at most\), got steps=2$"),
    ("PruneCallback end_epoch too early", lambda: PruneCallback(steps=3, start_epoch=4, end_epoch=5,
                                                                input_shape=(1, 8, 8)), ValueError,
     r"^PruneCallback: 3 pruning steps from epoch 4 need end_epoch >= 6 \(one step per epoch at most\), "
     r"got end_epoch=5$"),
    ("PruneCallback input_shape", lambda: PruneCallback(input_shape="1,8,8"), TypeError,
     r"^PruneCallback: input_shape must be a non-empty tuple or list .* got '1,8,8'$"),
    ("PruneCallback input_shape size", lambda: PruneCallback(input_shape=(1, 0, 8)), ValueError,
     r"^PruneCallback: input_shape\[1\] must be a positive integer, got 0"),
    ("QATCallback start_epoch", lambda: QATCallback(start_epoch=-1), ValueError,
     r"^QATCallback: start_epoch must be an integer in \[0, 9999\], got -1$"),
    ("QATCallback weight_quantize_type", lambda: QATCallback(weight_quantize_type="bogus"), ValueError,
     r"^QATCallback: weight_quantize_type must be one of \['abs_max', 'channel_wise_abs_max'\], got 'bogus'$"),
    ("DistillCallback teacher", lambda: DistillCallback("teacher.pdparams", []), TypeError,
     r"^DistillCallback: teacher must be a paddle.nn.Layer, got str$"),
    ("DistillCallback start_epoch", lambda: DistillCallback(tiny_net(), [], start_epoch=-2), ValueError,
     r"^DistillCallback: start_epoch must be an integer in \[0, 9999\], got -2$"),
    ("DistillCallback end_epoch", lambda: DistillCallback(tiny_net(), [], start_epoch=1, end_epoch=1), ValueError,
     r"^DistillCallback: the strategy starts at epoch 1 \(start_epoch\) and stops before epoch end_epoch, "
     r"so end_epoch must be greater than 1, got end_epoch=1$"),
    # flops
    ("flops model", lambda: slimhub.flops("mobilenet", (1, 8, 8)), TypeError,
     r"^flops: model must be a paddle.nn.Layer, got str$"),
    ("flops string shape", lambda: slimhub.flops(tiny_net(), "1,8,8"), TypeError,
     r"^flops: input_shape must be a non-empty tuple or list of positive integers like \(1, 28, 28\), got '1,8,8'$"),
    ("flops batch-first shape", lambda: slimhub.flops(tiny_net(), (1, 1, 8, 8)), ValueError,
     r"^flops: the network does not run on input_shape=\(1, 1, 8, 8\) \(one sample without the batch axis"),
    ("flops 2-D shape", lambda: slimhub.flops(tiny_net(), (8, 8)), ValueError,
     r"^flops: the network does not run on input_shape=\(8, 8\)"),
    # ArrayDataset
    ("ArrayDataset lengths", lambda: ArrayDataset(IMAGES, [0, 1]), ValueError,
     r"^ArrayDataset: 4 images but 2 labels$"),
    ("ArrayDataset label dtype", lambda: ArrayDataset(IMAGES, ["a", "b", "c", "d"]), TypeError,
     r"^ArrayDataset: labels must be integers \(class indices\), got dtype <U1$"),
    ("ArrayDataset fractional label", lambda: ArrayDataset(IMAGES, [0, 1.5, 2, 0]), ValueError,
     r"^ArrayDataset: labels must be whole numbers \(class indices\); labels\[1\] is .*1.5"),
    ("ArrayDataset label shape", lambda: ArrayDataset(IMAGES, np.zeros((4, 2))), ValueError,
     r"^ArrayDataset: labels must be one class index per image, got shape \[4, 2\]$"),
    ("ArrayDataset augment", lambda: ArrayDataset(IMAGES, [0, 1, 2, 0], augment="flip"), TypeError,
     r"^ArrayDataset: augment must be callable\(image, rng\) or None, got 'flip'$"),
]


@pytest.mark.parametrize("call, error, message", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_argument(call, error, message):
    with pytest.raises(error, match=message) as info:
        call()
    exc = info.value
    assert "\n" not in str(exc)
    assert exc.__cause__ is None and (exc.__context__ is None or exc.__suppress_context__)
    frame = info.traceback[-1]  # where it was raised: slimhub's code, not Paddle's
    assert f"{os.sep}slimhub{os.sep}" in str(frame.path) and f"{os.sep}paddle{os.sep}" not in str(frame.path)


def test_samples_must_be_pairs():
    class Triples(paddle.io.Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return random_data()[i] + (0,)

    with pytest.raises(ValueError, match=r"^Trainer.fit: train_data: each sample must be an \(input, label\) "
                                         r"pair; got 3 fields$"):
        trainer().fit(Triples(), epochs=1, verbose=0)


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


def test_resume_with_a_checkpoint_of_another_network(tmp_path):
    t = trainer()
    t.fit(random_data(), epochs=1, verbose=0, save_dir=str(tmp_path))
    other = paddle.nn.Sequential(paddle.nn.Flatten(), paddle.nn.Linear(64, 3))
    t2 = slimhub.Trainer(other, paddle.optimizer.SGD(0.1, parameters=other.parameters()),
                         paddle.nn.CrossEntropyLoss())
    with pytest.raises(ValueError, match="the checkpoint's weights do not fit the network"):
        t2.fit(random_data(), epochs=2, verbose=0, save_dir=str(tmp_path), resume=True)
    (tmp_path / "junk.pdckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.pdckpt"):
        t.load(str(tmp_path / "junk.pdckpt"))
