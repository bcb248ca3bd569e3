"""slimhub.flops against MAC and parameter counts worked out by hand."""
import pytest
from paddle import nn

import slimhub


def test_small_cnn_hand_count():
    net = nn.Sequential(
        nn.Conv2D(1, 4, 3, padding=1),      # 28x28x4 outputs, 1*9 MACs each
        nn.BatchNorm2D(4),                  # 28*28*4 outputs, one MAC each
        nn.ReLU(),
        nn.MaxPool2D(2, 2),                 # 14*14*4 outputs, 4 compares each
        nn.Conv2D(4, 8, 3, stride=2, padding=1, groups=2),  # 7x7x8, (4/2)*9 each
        nn.AdaptiveAvgPool2D(1),            # reads 7*7*8 inputs
        nn.Flatten(),
        nn.Linear(8, 10),                   # 8*10
    )
    expected = (28 * 28 * 4 * 9) + (28 * 28 * 4) + (14 * 14 * 4 * 4) \
        + (7 * 7 * 8 * 2 * 9) + (7 * 7 * 8) + (8 * 10)
    params = (4 * 1 * 9 + 4) + (4 * 4) + (8 * 2 * 9 + 8) + (8 * 10 + 10)
    # BN has 4 params (scale, bias) x 4 and 2 buffers (mean, var) that are not parameters
    assert slimhub.flops(net, (1, 28, 28)) == {"flops": expected, "params": params}


def test_depthwise():
    net = nn.Sequential(nn.Conv2D(6, 6, 3, padding=1, groups=6, bias_attr=False))
    assert slimhub.flops(net, (6, 16, 16)) == {"flops": 16 * 16 * 6 * 1 * 9, "params": 6 * 9}


def test_conv_transpose_counts_inputs():
    net = nn.Conv2DTranspose(4, 6, 3, stride=2, groups=2, bias_attr=False)
    assert slimhub.flops(net, (4, 5, 5))["flops"] == 5 * 5 * 4 * 3 * 9


def test_linear_network_takes_one_sample_of_features():
    net = nn.Sequential(nn.Linear(3, 2))
    net.train()
    assert slimhub.flops(net, (3,)) == {"flops": 3 * 2, "params": 3 * 2 + 2}
    assert net.training  # restored
    with pytest.raises(TypeError, match="nn.Layer"):
        slimhub.flops(lambda x: x, (3,))


# input_shape is one sample without the batch axis; shapes an image network cannot run on
# are refused, naming the shape (a batch axis is never dropped or guessed)
@pytest.mark.parametrize("shape, error, message", [
    ((1, 1, 28, 28), ValueError, r"does not run on input_shape=\(1, 1, 28, 28\) \(one sample without the batch axis"),
    ((28, 28), ValueError, r"does not run on input_shape=\(28, 28\)"),
    ((2, 28, 28), ValueError, r"does not run on input_shape=\(2, 28, 28\).*channels"),
    ("1,28,28", TypeError, r"input_shape must be a non-empty tuple or list .* got '1,28,28'"),
    ((), TypeError, r"input_shape must be a non-empty tuple or list .* got \(\)"),
    ((1, 0, 28), ValueError, r"input_shape\[1\] must be a positive integer, got 0"),
    ((1, 28.0, 28), ValueError, r"input_shape\[1\] must be a positive integer, got 28.0"),
    ((True, 28, 28), ValueError, r"input_shape\[0\] must be a positive integer, got True"),
])
def test_bad_input_shapes(shape, error, message):
    net = nn.Sequential(nn.Conv2D(1, 4, 3), nn.Flatten(), nn.Linear(4 * 26 * 26, 10))
    with pytest.raises(error, match=message) as info:
        slimhub.flops(net, shape)
    exc = info.value
    assert "\n" not in str(exc)
    assert exc.__cause__ is None and (exc.__context__ is None or exc.__suppress_context__)  # no Paddle traceback
    assert slimhub.flops(net, (1, 28, 28))["flops"] == 4 * 26 * 26 * 9 + 4 * 26 * 26 * 10


def test_bad_dtype():
    with pytest.raises(ValueError, match="flops: dtype 'float33' is not a Paddle data type"):
        slimhub.flops(nn.Linear(3, 2), (3,), dtype="float33")
