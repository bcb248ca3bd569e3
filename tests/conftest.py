import slimhub  # noqa: F401  (first: sets MKL_DEBUG_CPU_TYPE on AMD CPUs before paddle loads)

import numpy as np
import paddle
import pytest

from slimhub.callbacks import Callback
from slimhub.data import ArrayDataset


def tiny_net(dropout=0.0):
    return paddle.nn.Sequential(
        paddle.nn.Conv2D(1, 4, 3, padding=1), paddle.nn.BatchNorm2D(4), paddle.nn.ReLU(),
        paddle.nn.MaxPool2D(2), paddle.nn.Flatten(), paddle.nn.Dropout(dropout),
        paddle.nn.Linear(4 * 4 * 4, 3))


def random_data(n=48, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 1, 8, 8)).astype("float32")
    y = (x[:, 0, :4].mean(axis=(1, 2)) > 0).astype("int64") + (x[:, 0, 4:].mean(axis=(1, 2)) > 0)
    return ArrayDataset(x, y)


@pytest.fixture
def data():
    return random_data()


class ReplaceClassifier(Callback):
    """At epoch 1, replaces the last layer's weight by a new Parameter, as pruning does."""

    def __init__(self):
        super().__init__()
        self.events = []

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 1:
            fc = self.network[-1]
            self.before = fc.weight.numpy()
            fc.weight = fc.create_parameter(self.before.shape)
            fc.weight.set_value(self.before)
            self.new_weight = fc.weight
            self.structure_changed()

    def on_structure_changed(self, network):
        self.events.append(type(network).__name__)
