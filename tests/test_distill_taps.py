"""Feature taps: outputs by layer name, checked against calling the layers by hand."""
import numpy as np
import paddle
import pytest
from paddle import nn

from slimhub.distill import FeatureTap, UnknownLayerError, find_layer


class Net(nn.Layer):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2D(1, 4, 3, padding=1), nn.ReLU())
        self.act = nn.ReLU()  # used twice in forward
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        y = self.act(self.stem(x))
        y = self.act(y - 0.5)
        return self.head(y.mean([2, 3]))


def test_tap_records_outputs_equal_to_calling_the_layers():
    paddle.seed(1)
    net, x = Net(), paddle.randn([2, 1, 6, 6])
    tap = FeatureTap(net, ["stem", "stem.0", "head"], "student")
    net(x)
    conv = net.stem[0]
    by_hand = paddle.nn.functional.conv2d(x, conv.weight, conv.bias, padding=1).numpy()
    np.testing.assert_allclose(tap.get("stem.0").numpy(), by_hand, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(tap.get("stem").numpy(), np.maximum(by_hand, 0), rtol=1e-5, atol=1e-6)
    assert tap.get("head").shape == [2, 3]


def test_unknown_name_lists_nearest_names():
    with pytest.raises(UnknownLayerError, match=r"teacher has no layer named 'haed'; nearest names: 'head'"):
        find_layer(Net(), "haed", "teacher")
    with pytest.raises(KeyError):
        FeatureTap(Net(), ["stem.9"], "student")


def test_layer_run_twice_in_one_forward_is_refused():
    net = Net()
    tap = FeatureTap(net, ["act"], "student")
    net(paddle.randn([1, 1, 4, 4]))
    with pytest.raises(RuntimeError, match="'act' ran 2 times in one forward"):
        tap.get("act")


def test_each_forward_replaces_the_previous_and_remove_unhooks():
    net = Net()
    tap = FeatureTap(net, ["head"], "student")
    with pytest.raises(RuntimeError, match="did not run"):
        tap.get("head")
    net(paddle.randn([1, 1, 4, 4]))
    net(paddle.randn([3, 1, 4, 4]))  # a second forward: one call, the latest batch
    assert tap.get("head").shape == [3, 3]
    tap.remove()
    net(paddle.randn([1, 1, 4, 4]))
    with pytest.raises(RuntimeError, match="did not run"):
        tap.get("head")


def test_attach_follows_a_replaced_layer():
    net = Net()
    tap = FeatureTap(net, ["head"], "student")
    net.head = nn.Linear(4, 5)
    tap.attach(net)
    net(paddle.randn([2, 1, 4, 4]))
    assert tap.get("head").shape == [2, 5]
