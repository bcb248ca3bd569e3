"""QATCallback under the slimhub Trainer: start epoch, optimizer, exact resume, with pruning
and distillation."""
import os

import numpy as np
import paddle
import pytest
from paddle import nn
from paddle.nn import functional as F

from slimhub import Trainer
from slimhub.callbacks import Callback
from slimhub.callbacks.distill import DistillCallback
from slimhub.callbacks.prune import PruneCallback
from slimhub.callbacks.qat import QATCallback
from slimhub.flops import flops
from slimhub.quant import quantized_layers
from slimhub.quant.wrap import output_quantized_layers

SHAPE = (1, 8, 8)


def net(seed=0):
    paddle.seed(seed)
    return nn.Sequential(
        nn.Conv2D(1, 8, 3, padding=1), nn.BatchNorm2D(8), nn.ReLU(),
        nn.Conv2D(8, 16, 3, padding=1), nn.BatchNorm2D(16), nn.ReLU(), nn.MaxPool2D(2),
        nn.Flatten(), nn.Linear(16 * 16, 3))


class Residual(nn.Layer):
    """A conv stem and one residual block: ``relu(x + bn2(conv(x)))``."""

    def __init__(self, seed=0):
        super().__init__()
        paddle.seed(seed)
        self.stem, self.bn = nn.Conv2D(1, 8, 3, padding=1), nn.BatchNorm2D(8)
        self.conv, self.bn2 = nn.Conv2D(8, 8, 3, padding=1), nn.BatchNorm2D(8)
        self.fc = nn.Linear(8 * 8 * 8, 3)

    def forward(self, x):
        x = F.relu(self.bn(self.stem(x)))
        x = F.relu(x + self.bn2(self.conv(x)))
        return self.fc(paddle.flatten(x, 1))


def trainer(model):
    opt = paddle.optimizer.Momentum(learning_rate=0.05, parameters=model.parameters())
    return Trainer(model, opt, nn.CrossEntropyLoss())


class QuantizedAtEpochBegin(Callback):
    def __init__(self):
        super().__init__()
        self.counts = []

    def on_epoch_begin(self, epoch, logs=None):
        self.counts.append(len(quantized_layers(self.network)))


def snapshot(model):
    return {k: v.numpy().copy() for k, v in model.state_dict().items()}


def test_quantizes_at_start_epoch_and_trains_the_same_parameters(data):
    model = net()
    weight = model[0].weight
    t = trainer(model)
    seen = QuantizedAtEpochBegin()
    history = t.fit(data, epochs=3, batch_size=16, verbose=0, seed=0,
                    callbacks=[QATCallback(start_epoch=1, skip=["8"]), seen])
    assert seen.counts == [0, 2, 2]
    assert history["quantized_layers"] == [2, 2]  # logged from epoch 1 on
    assert model[0].weight is weight
    assert {id(p) for p in t.optimizer._parameter_list} == \
        {id(p) for p in model.parameters() if not p.stop_gradient}
    scales = [layer.activation_quanter.scale.item() for layer in quantized_layers(model).values()]
    assert all(s > 0 for s in scales)
    assert all(np.isfinite(history["loss"]))


@pytest.mark.parametrize("make,layers,outputs", [
    (net, ["0", "3", "8"], []),
    (Residual, ["conv", "fc", "stem"], ["bn2"]),  # the output quanter is traced after the first step
])
def test_resume_mid_training_continues_identically(data, tmp_path, make, layers, outputs):
    callbacks = lambda: [QATCallback(start_epoch=1)]  # noqa: E731
    straight = make()
    history = trainer(straight).fit(data, epochs=3, batch_size=16, verbose=0, seed=0, callbacks=callbacks())
    assert history["output_quantized_layers"] == [len(outputs)] * 2

    save = str(tmp_path)
    interrupted = make()
    trainer(interrupted).fit(data, epochs=2, batch_size=16, verbose=0, seed=0, save_dir=save,
                             callbacks=callbacks())  # checkpoint after one quantized epoch
    resumed = make()
    history = trainer(resumed).fit(data, epochs=3, batch_size=16, verbose=0, seed=0, save_dir=save,
                                   resume=True, callbacks=callbacks())
    assert len(history["loss"]) == 3
    assert sorted(quantized_layers(resumed)) == layers
    assert sorted(output_quantized_layers(resumed)) == outputs
    expected, got = snapshot(straight), snapshot(resumed)
    assert sorted(got) == sorted(expected)
    for key in expected:
        np.testing.assert_array_equal(got[key], expected[key], err_msg=key)


def test_a_checkpoint_saved_before_unsigned_grids_resumes_with_signed_ones(data, tmp_path):
    """Such a checkpoint has no ``unsigned`` buffers and no list of output quanters: its
    quanters stay signed and no output quanters are added."""
    save = str(tmp_path)
    trainer(Residual()).fit(data, epochs=2, batch_size=16, verbose=0, seed=0, save_dir=save,
                            callbacks=[QATCallback(start_epoch=1)])
    path = os.path.join(save, "last.pdckpt")
    state = paddle.load(path)
    state["network"] = {k: v for k, v in state["network"].items()
                        if not k.endswith(".unsigned") and ".output_quanter." not in k}
    for callback in state["callbacks"].values():
        callback.pop("outputs", None)
    paddle.save(state, path)
    resumed = Residual()
    trainer(resumed).fit(data, epochs=3, batch_size=16, verbose=0, seed=0, save_dir=save, resume=True,
                         callbacks=[QATCallback(start_epoch=1)])
    assert output_quantized_layers(resumed) == {}
    assert not any(layer.activation_quanter.is_unsigned() for layer in quantized_layers(resumed).values())


def test_resume_with_another_config_is_refused(data, tmp_path):
    save = str(tmp_path)
    trainer(net()).fit(data, epochs=1, batch_size=16, verbose=0, save_dir=save, callbacks=[QATCallback()])
    with pytest.raises(ValueError, match="same settings"):
        trainer(net()).fit(data, epochs=2, batch_size=16, verbose=0, save_dir=save, resume=True,
                           callbacks=[QATCallback(weight_bits=4)])


def test_after_pruning_and_with_distillation(data):
    model, teacher = net(), net(seed=1)
    distill = DistillCallback(teacher, [{"type": "soft_label", "teacher": "8", "student": "8"}])
    prune = PruneCallback(0.5, start_epoch=0, input_shape=SHAPE, round_to=1)
    history = trainer(model).fit(data, epochs=2, batch_size=16, verbose=0, seed=0,
                                 callbacks=[prune, QATCallback(start_epoch=1), distill])
    layers = quantized_layers(model)
    assert sorted(layers) == ["0", "3", "8"]
    assert layers["0"].weight.shape[0] < 8 and layers["3"].weight.shape[1] == layers["0"].weight.shape[0]
    assert history["flops"][1] == flops(model, SHAPE)["flops"]  # quantizing keeps the MACs
    assert len(history["distill_soft_label"]) == 2 and np.isfinite(history["distill_soft_label"]).all()
    for layer in model.sublayers(include_self=True):  # distillation removed its hooks from the wrappers
        assert not layer._forward_pre_hooks and not layer._forward_post_hooks


def test_bad_arguments():
    with pytest.raises(ValueError, match="QATCallback: weight_quantize_type"):
        QATCallback(weight_quantize_type="moving_average_abs_max")
    with pytest.raises(ValueError, match="start_epoch"):
        QATCallback(start_epoch=-1)
    with pytest.raises(ValueError, match="activation_bits"):
        QATCallback(activation_bits=32)
