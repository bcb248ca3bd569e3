"""PruneCallback under the slimhub Trainer: schedule, logged size, resume."""
import os

import numpy as np
import paddle
import pytest
from paddle import nn

from slimhub import Trainer
from slimhub.callbacks.prune import PruneCallback
from slimhub.flops import flops
from slimhub.prune import load_pruned

SHAPE = (1, 8, 8)


def net():
    paddle.seed(0)
    return nn.Sequential(
        nn.Conv2D(1, 8, 3, padding=1), nn.BatchNorm2D(8), nn.ReLU(),
        nn.Conv2D(8, 16, 3, padding=1), nn.BatchNorm2D(16), nn.ReLU(), nn.MaxPool2D(2),
        nn.Flatten(), nn.Linear(16 * 16, 3))


# one channel's worth of MACs: the 8x8 maps of a 16-channel conv reading 8 channels, or
# of an 8-channel conv plus the second conv's input (+ norms, pool and classifier)
ONE_CHANNEL = 64 * 9 * 8 + 64 * 9 * 16


def trainer(model):
    opt = paddle.optimizer.Momentum(learning_rate=0.05, parameters=model.parameters())
    return Trainer(model, opt, nn.CrossEntropyLoss(), paddle.metric.Accuracy())


def base_flops():
    return flops(net(), SHAPE)["flops"]


def test_one_shot_at_start_epoch(data):
    model = net()
    t = trainer(model)
    history = t.fit(data, epochs=2, batch_size=16, verbose=0,
                    callbacks=[PruneCallback(0.5, start_epoch=1, input_shape=SHAPE, round_to=1)])
    base = base_flops()
    assert history["flops"][0] == base
    assert abs(history["flops"][1] - 0.5 * base) <= ONE_CHANNEL
    assert history["flops"][1] == flops(model, SHAPE)["flops"]
    assert history["params"][1] < history["params"][0]
    assert all(np.isfinite(history["loss"]))
    # the optimizer follows the new parameters
    trainable = {id(p) for p in model.parameters() if not p.stop_gradient}
    assert {id(p) for p in t.optimizer._parameter_list} == trainable


def test_gradual_steps(data):
    model = net()
    history = trainer(model).fit(
        data, epochs=3, batch_size=16, verbose=0,
        callbacks=[PruneCallback(0.5, steps=2, start_epoch=0, end_epoch=2, input_shape=SHAPE, round_to=1)])
    base = base_flops()
    f = history["flops"]
    assert abs(f[0] - 0.75 * base) <= ONE_CHANNEL and f[1] == f[0]
    assert abs(f[2] - 0.5 * base) <= ONE_CHANNEL


def test_resume_reapplies_plan(data, tmp_path):
    save = str(tmp_path)
    model = net()
    trainer(model).fit(data, epochs=1, batch_size=16, verbose=0, save_dir=save,
                       callbacks=[PruneCallback(0.5, input_shape=SHAPE, round_to=1)])
    pruned_flops = flops(model, SHAPE)["flops"]
    assert os.path.exists(os.path.join(save, "prune_plan.json"))

    resumed = net()
    history = trainer(resumed).fit(data, epochs=2, batch_size=16, verbose=0, save_dir=save, resume=True,
                                   callbacks=[PruneCallback(0.5, input_shape=SHAPE, round_to=1)])
    assert len(history["loss"]) == 2  # epoch 0 from the checkpoint, epoch 1 trained on
    assert flops(resumed, SHAPE)["flops"] == pruned_flops  # pruned once, not twice

    rebuilt = load_pruned(net(), os.path.join(save, "prune_plan.json"))
    rebuilt.set_state_dict(model.state_dict())
    x = paddle.randn([2, *SHAPE])
    model.eval()
    rebuilt.eval()
    np.testing.assert_array_equal(rebuilt(x).numpy(), model(x).numpy())


def test_sensitive_with_trainer_evaluation(data, tmp_path):
    model = net()
    history = trainer(model).fit(
        data, eval_data=data, epochs=1, batch_size=16, verbose=0, save_dir=str(tmp_path),
        callbacks=[PruneCallback(0.5, method="sensitive", input_shape=SHAPE, round_to=1)])
    assert abs(history["flops"][0] - 0.5 * base_flops()) <= ONE_CHANNEL
    assert os.path.exists(tmp_path / "sensitivity.json")


def test_bad_arguments():
    with pytest.raises(ValueError, match="uniform"):
        PruneCallback(method="greedy", input_shape=SHAPE)
    with pytest.raises(ValueError, match="end_epoch"):
        PruneCallback(steps=3, input_shape=SHAPE)
    with pytest.raises(ValueError, match="input_shape"):
        PruneCallback()
    with pytest.raises(KeyError, match="l1_norm"):
        PruneCallback(criterion="l0", input_shape=SHAPE)


def test_export_writes_plan_that_rebuilds_the_model(data, tmp_path):
    model = net()
    t = trainer(model)
    t.fit(data, epochs=1, batch_size=16, verbose=0, callbacks=[PruneCallback(0.5, input_shape=SHAPE, round_to=1)])
    files = t.export(str(tmp_path / "m"), [paddle.static.InputSpec([None, *SHAPE], "float32")])
    assert str(tmp_path / "m_prune_plan.json") in files
    rebuilt = load_pruned(net(), str(tmp_path / "m_prune_plan.json"))
    rebuilt.set_state_dict(model.state_dict())
    rebuilt.eval()
    loaded = paddle.jit.load(str(tmp_path / "m"))
    x = paddle.to_tensor(data.images[:4])
    np.testing.assert_allclose(rebuilt(x).numpy(), loaded(x).numpy(), rtol=1e-5, atol=1e-6)
