"""Training faults: non-finite losses, empty data, bad labels and inputs, checkpoint
folders, and checkpoints resumed or loaded with other settings. References are an
uninterrupted run, hand-counted checkpoint steps, or the exact expected message."""
import io
import os
import warnings

import numpy as np
import paddle
import pytest
from paddle import nn

import slimhub
from slimhub.callbacks import ModelCheckpoint, NaNGuard, NonFiniteLossError, PruneCallback
from slimhub.data import ArrayDataset
from conftest import random_data, tiny_net

# 40 samples in batches of 8: 5 steps per epoch, 2 epochs. ModelCheckpoint(save_steps=2)
# writes last.pdckpt at global steps 2, 4, 6, 8 and at each epoch's end (5, 10).
EPOCHS, STEPS = 2, 5


class PoisonedLoss:
    """Cross entropy, times ``bad`` (NaN or inf) at training step ``at`` (counted from 1)."""

    def __init__(self, at=None, bad=float("nan")):
        self.at, self.bad, self.steps = at, bad, 0

    def __call__(self, outputs, labels):
        loss = paddle.nn.functional.cross_entropy(outputs, labels)
        if outputs.stop_gradient:  # evaluation
            return loss
        self.steps += 1
        return loss * self.bad if self.steps == self.at else loss


def make_trainer(loss=None, metrics=True):
    paddle.seed(0)
    net = tiny_net()
    return slimhub.Trainer(net, paddle.optimizer.Momentum(0.05, parameters=net.parameters()),
                           loss or PoisonedLoss(), metrics=[paddle.metric.Accuracy(topk=(1, 2))] if metrics else None)


def fit(trainer, save_dir, guard=None, **kw):
    callbacks = [ModelCheckpoint(str(save_dir), save_steps=2)] + ([guard] if guard else [])
    return trainer.fit(random_data(40), random_data(16, seed=1), epochs=EPOCHS, batch_size=8, seed=0,
                       verbose=0, save_dir=str(save_dir), callbacks=callbacks, **kw)


def weights(trainer):
    return {k: v.numpy() for k, v in trainer.network.state_dict().items()}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    trainer = make_trainer()
    fit(trainer, tmp_path_factory.mktemp("clean"))
    return weights(trainer)


# (global step of the bad loss, its value, the epoch and step the message names, the global
# step of the last finite last.pdckpt (None: none written), of best.pdckpt (epoch ends))
POSITIONS = [
    (1, float("nan"), "epoch 1, step 1", None, None),   # the very first step
    (8, float("inf"), "epoch 2, step 3", 6, 5),         # mid epoch
    (5, float("nan"), "epoch 1, step 5", 4, None),      # the last step of an epoch
    (10, float("-inf"), "epoch 2, step 5", 8, 5),       # the last step of the last epoch
]
GUARDS = ["default", "stop", "warn"]


@pytest.mark.parametrize("guard", GUARDS)
@pytest.mark.parametrize("at, bad, where, last_step, best_step", POSITIONS,
                         ids=["first-step", "mid-epoch", "epoch-end", "last-step"])
def test_nonfinite_loss(tmp_path, uninterrupted, guard, at, bad, where, last_step, best_step):
    stream = io.StringIO()
    trainer = make_trainer(PoisonedLoss(at, bad))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if guard == "default":  # no NaNGuard given: fit raises
            with pytest.raises(NonFiniteLossError) as info:
                fit(trainer, tmp_path)
            message = str(info.value)
            assert message == (f"NaNGuard: the loss is {bad} at {where} (global step {at}); training "
                               f"stopped; {tmp_path} keeps the last finite checkpoint")
        else:
            history = fit(trainer, tmp_path, NaNGuard(guard, stream=stream))
            message = stream.getvalue()
            assert message.count("NaNGuard:") == 1 and f"the loss is {bad} at {where} (global step {at})" in message
            if guard == "stop":  # the epoch cut short is recorded, but neither evaluated nor ended
                epoch = int(where.split()[1].rstrip(","))
                assert len(history["loss"]) == epoch and len(history.get("eval_loss", [])) == epoch - 1
                assert trainer.global_step == at
            else:  # trains on to the end, every later save refused
                assert len(history["loss"]) == EPOCHS and trainer.global_step == EPOCHS * STEPS
    refused = [w for w in caught if "ModelCheckpoint: not saving" in str(w.message)]
    # one warning however many saves are refused: a save falls on the bad step, or training goes on
    assert len(refused) == (1 if guard == "warn" or at % 2 == 0 else 0)
    assert "\n" not in message.strip()

    files = sorted(os.listdir(tmp_path))
    if last_step is None:
        assert "last.pdckpt" not in files
    else:
        state = paddle.load(str(tmp_path / "last.pdckpt"))
        assert state["global_step"] == last_step
        assert all(np.isfinite(np.asarray(v)).all() for v in state["network"].values())
    if best_step is None:
        assert "best.pdckpt" not in files
    else:
        assert paddle.load(str(tmp_path / "best.pdckpt"))["global_step"] == best_step
    assert not [f for f in files if f.startswith(".tmp")]

    # resuming starts from the last finite state and ends exactly where an uninterrupted run ends
    resumed = make_trainer()
    starts = []

    class Start(slimhub.callbacks.Callback):
        def on_train_begin(self, logs=None):
            starts.append(self.model.global_step)

    resumed.fit(random_data(40), random_data(16, seed=1), epochs=EPOCHS, batch_size=8, seed=0, verbose=0,
                save_dir=str(tmp_path), resume=True,
                callbacks=[ModelCheckpoint(str(tmp_path), save_steps=2), Start()])
    assert starts == [last_step or 0]
    for k, v in weights(resumed).items():
        np.testing.assert_array_equal(v, uninterrupted[k], err_msg=k)


def test_nan_guard_stops_on_nonfinite_weights_with_a_finite_loss(tmp_path):
    """BatchNorm trains on batch statistics, so a NaN running mean leaves the loss finite; the
    guard looks at the weights and buffers at each epoch's last step."""
    class Poison(slimhub.callbacks.Callback):
        def on_train_batch_begin(self, step, logs=None):
            if self.model.global_step == 0:
                self.network[1]._mean.set_value(np.full([4], np.nan, "float32"))

    losses = []

    class Record(slimhub.callbacks.Callback):
        def on_train_batch_end(self, step, logs=None):
            losses.append(logs["step_loss"])

    with pytest.raises(NonFiniteLossError) as info:
        make_trainer().fit(random_data(16), epochs=2, batch_size=8, verbose=0, save_dir=str(tmp_path),
                           callbacks=[Poison(), Record()])
    assert str(info.value) == ("NaNGuard: 1._mean holds NaN or infinite values (the loss is finite) at epoch 1, "
                               f"step 2 (global step 2); training stopped; {tmp_path} keeps the last finite checkpoint")
    assert len(losses) == 2 and np.isfinite(losses).all()
    assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------- empty data
def empty():
    return ArrayDataset(np.zeros((0, 1, 8, 8), "float32"), np.zeros(0, "int64"))


EMPTY = [
    ("fit", dict(train_data=empty()), r"^Trainer.fit: train_data is empty \(0 samples\)$"),
    ("fit", dict(train_data=random_data(8), eval_data=empty()), r"^Trainer.fit: eval_data is empty \(0 samples\)$"),
    ("fit", dict(train_data=random_data(5), batch_size=8, drop_last=True),
     r"^Trainer.fit: train_data has 5 samples, fewer than batch_size=8: with drop_last=True no batch is left"),
    ("fit", dict(train_data=paddle.io.DataLoader(empty(), batch_size=4)),
     r"^Trainer.fit: train_data is a DataLoader that yields no batches \(its length is 0\)$"),
    ("evaluate", dict(eval_data=empty()), r"^Trainer.evaluate: eval_data is empty \(0 samples\)$"),
    ("evaluate", dict(eval_data=paddle.io.DataLoader(empty(), batch_size=4)),
     r"^Trainer.evaluate: eval_data is a DataLoader that yields no batches"),
    ("predict", dict(data=empty()), r"^Trainer.predict: data is empty \(0 samples\)$"),
]


@pytest.mark.parametrize("method, kwargs, message", EMPTY, ids=[f"{m}-{i}" for i, (m, *_) in enumerate(EMPTY)])
def test_empty_data_is_refused_before_anything_is_written(tmp_path, method, kwargs, message):
    trainer = make_trainer()
    before = weights(trainer)
    save_dir = tmp_path / "run"
    if method == "fit":
        kwargs = dict(kwargs, save_dir=str(save_dir), verbose=0)
    with pytest.raises(ValueError, match=message):
        getattr(trainer, method)(**kwargs)
    assert not save_dir.exists()
    for k, v in weights(trainer).items():
        np.testing.assert_array_equal(v, before[k])


# ---------------------------------------------------------- checkpoint folders
def test_save_dir_that_is_a_file(tmp_path):
    path = tmp_path / "taken"
    path.write_text("notes")
    with pytest.raises(ValueError, match=f"^Trainer.fit: save_dir '{path}' is a file, not a folder$"):
        make_trainer().fit(random_data(8), verbose=0, save_dir=str(path))
    with pytest.raises(ValueError, match=f"^ModelCheckpoint: save_dir '{path}' is a file, not a folder$"):
        make_trainer().fit(random_data(8), verbose=0, callbacks=[ModelCheckpoint(str(path))])
    inner = path / "run"
    with pytest.raises(ValueError, match=f"^Trainer.fit: save_dir '{inner}' cannot be created: {path} is a file"):
        make_trainer().fit(random_data(8), verbose=0, save_dir=str(inner))
    assert path.read_text() == "notes"


def test_save_dir_not_writable(tmp_path, monkeypatch):
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o555)
    if os.access(folder, os.W_OK):  # root writes anyway: make the file system say no
        real = slimhub.checkpoint.tempfile.mkstemp

        def refuse(*args, dir=None, **kwargs):
            if dir == str(folder):
                raise PermissionError(13, "Permission denied")
            return real(*args, dir=dir, **kwargs)
        monkeypatch.setattr(slimhub.checkpoint.tempfile, "mkstemp", refuse)
    trainer = make_trainer()
    before = weights(trainer)
    with pytest.raises(ValueError, match=f"^Trainer.fit: save_dir '{folder}' is not writable: Permission denied$"):
        trainer.fit(random_data(8), verbose=0, save_dir=str(folder))
    for k, v in weights(trainer).items():
        np.testing.assert_array_equal(v, before[k])  # nothing trained
    folder.chmod(0o755)


def test_stale_temporary_files_are_removed_by_the_next_run(tmp_path):
    stale = [".tmp-ab12cd_9", ".tmp-zzzzzzzz"]  # what an interrupted atomic write leaves
    kept = [".tmp-notes.txt", "x.tmp-abcdefgh", ".tmp-short"]  # not ours: left alone
    for name in stale + kept:
        (tmp_path / name).write_bytes(b"half")
    (tmp_path / ".tmp-dir12345").mkdir()  # a folder of that name is not a file we wrote
    make_trainer().fit(random_data(8), epochs=1, batch_size=8, verbose=0, save_dir=str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == sorted(kept + [".tmp-dir12345", "last.pdckpt"])


# ------------------------------------------------- resume and load with settings
def prune_trainer(pruned_flops):
    paddle.seed(0)
    net = nn.Sequential(nn.Conv2D(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2D(8, 8, 3, padding=1), nn.ReLU(),
                        nn.Flatten(), nn.Linear(8 * 8 * 8, 3))
    trainer = slimhub.Trainer(net, paddle.optimizer.SGD(0.05, parameters=net.parameters()), nn.CrossEntropyLoss())
    return trainer, PruneCallback(pruned_flops, input_shape=(1, 8, 8), round_to=1)


def test_resume_with_other_pruning_settings_is_refused(tmp_path):
    trainer, prune = prune_trainer(0.3)
    trainer.fit(random_data(16), epochs=1, batch_size=8, verbose=0, save_dir=str(tmp_path), callbacks=[prune])
    before = (tmp_path / "last.pdckpt").read_bytes()
    trainer, prune = prune_trainer(0.5)
    with pytest.raises(ValueError, match=r"^PruneCallback: the checkpoint was trained with pruned_flops=0.3; "
                                         r"this callback has pruned_flops=0.5; pass the same settings to resume"):
        trainer.fit(random_data(16), epochs=2, batch_size=8, verbose=0, save_dir=str(tmp_path), resume=True,
                    callbacks=[prune])
    assert (tmp_path / "last.pdckpt").read_bytes() == before


def test_load_what_fit_wrote(tmp_path):
    """A fresh Trainer, one whose callbacks hold a ModelCheckpoint, and a checkpoint written by
    a ModelCheckpoint the fit was given: all load without passing the checkpoint's callbacks."""
    data, probe = random_data(16), random_data(8, seed=2)
    trainer = make_trainer(nn.CrossEntropyLoss())
    trainer.fit(data, random_data(8, seed=1), epochs=2, batch_size=8, verbose=0, save_dir=str(tmp_path / "a"))
    expected = trainer.predict(probe)
    fresh = make_trainer(nn.CrossEntropyLoss())
    fresh.load(str(tmp_path / "a" / "last.pdckpt"))
    assert (fresh.epoch, fresh.global_step) == (2, 4)
    np.testing.assert_array_equal(fresh.predict(probe), expected)
    best_step = paddle.load(str(tmp_path / "a" / "best.pdckpt"))["global_step"]
    trainer.load(str(tmp_path / "a" / "best.pdckpt"))  # its callbacks from the fit are still attached
    assert trainer.global_step == best_step
    given = make_trainer(nn.CrossEntropyLoss())
    given.fit(data, epochs=2, batch_size=8, verbose=0, save_dir=str(tmp_path / "b"),
              callbacks=[ModelCheckpoint(str(tmp_path / "b"), save_steps=3)])
    fresh = make_trainer(nn.CrossEntropyLoss())
    fresh.load(str(tmp_path / "b" / "last.pdckpt"))
    np.testing.assert_array_equal(fresh.predict(probe), given.predict(probe))


def test_load_a_pruned_checkpoint(tmp_path):
    trainer, prune = prune_trainer(0.5)
    trainer.fit(random_data(16), epochs=1, batch_size=8, verbose=0, save_dir=str(tmp_path), callbacks=[prune])
    path = str(tmp_path / "last.pdckpt")
    plain, _ = prune_trainer(0.5)
    with pytest.raises(ValueError, match=r"the checkpoint's weights do not fit the network.*Pass the same callbacks "
                                         r"\(it holds state of \['ModelCheckpoint.0', 'PruneCallback.0'\]\)"):
        plain.load(path)
    loaded, prune = prune_trainer(0.5)
    loaded.load(path, callbacks=[prune])
    assert loaded.network[0].weight.shape == trainer.network[0].weight.shape != [8, 1, 3, 3]
    np.testing.assert_array_equal(loaded.predict(random_data(8)), trainer.predict(random_data(8)))


# ------------------------------------------------------ labels and inputs
def test_labels_outside_the_classes(tmp_path):
    labels = np.array([0, 1, 2, 0, 1, 2, 0, 1, 3, 0, 0, 0, 0, 0, 0, 0])  # sample 8 is class 3 of 3
    data = ArrayDataset(random_data(16).images, labels)
    with pytest.raises(ValueError, match=r"^Trainer.fit: train_data: epoch 1, step 2, sample 0 of the batch: "
                                         r"label 3 is outside the network's 3 classes \(its output width\): "
                                         r"labels must be 0..2$"):
        make_trainer(nn.CrossEntropyLoss()).fit(data, batch_size=8, shuffle=False, verbose=0)
    negative = ArrayDataset(random_data(4).images, [0, -1, 1, 2])
    with pytest.raises(ValueError, match=r"^Trainer.evaluate: eval_data sample 1: label -1 is outside"):
        make_trainer(nn.CrossEntropyLoss()).evaluate(negative)
    # a loss the Trainer does not know: Paddle's IndexError is explained the same way
    with pytest.raises(ValueError, match=r"sample 1 of the batch: label -1 is outside the network's 3 classes"):
        make_trainer(lambda out, y: paddle.nn.functional.cross_entropy(out, y), metrics=False).fit(
            negative, verbose=0, shuffle=False)
    # ignore_index labels are not class indices
    make_trainer(nn.CrossEntropyLoss(ignore_index=-1), metrics=False).fit(negative, verbose=0, shuffle=False)


def test_inputs_the_first_layer_cannot_take():
    rgb = ArrayDataset(np.zeros((4, 3, 8, 8), "float32"), [0, 1, 2, 0])
    expected = (r"the inputs have 3 channels \(batch shape \[4, 3, 8, 8\]\) but the network's first layer "
                r"'0' \(Conv2D\) expects 1$")
    with pytest.raises(ValueError, match=r"^Trainer.fit: train_data: " + expected):
        make_trainer().fit(rgb, verbose=0)
    with pytest.raises(ValueError, match=r"^Trainer.predict: data: " + expected):
        make_trainer().predict(rgb)
    flat = ArrayDataset(np.zeros((4, 5), "float32"), [0, 1, 2, 0])
    net = nn.Sequential(nn.Linear(4, 3))
    trainer = slimhub.Trainer(net, paddle.optimizer.SGD(0.1, parameters=net.parameters()), nn.CrossEntropyLoss())
    with pytest.raises(ValueError, match=r"^Trainer.evaluate: eval_data: the inputs have 5 features \(batch shape "
                                         r"\[4, 5\]\) but the network's first layer '0' \(Linear\) takes 4$"):
        trainer.evaluate(flat)
