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


def test_depthwise_and_batch_axis():
    net = nn.Sequential(nn.Conv2D(6, 6, 3, padding=1, groups=6, bias_attr=False))
    hand = 16 * 16 * 6 * 1 * 9
    assert slimhub.flops(net, [4, 6, 16, 16])["flops"] == hand  # per sample
    assert slimhub.flops(net, (6, 16, 16))["params"] == 6 * 9


def test_conv_transpose_counts_inputs():
    net = nn.Conv2DTranspose(4, 6, 3, stride=2, groups=2, bias_attr=False)
    assert slimhub.flops(net, (4, 5, 5))["flops"] == 5 * 5 * 4 * 3 * 9


def test_training_mode_restored_and_bad_shape():
    net = nn.Sequential(nn.Linear(3, 2))
    net.train()
    slimhub.flops(net, (5, 3))
    assert net.training
    with pytest.raises(ValueError, match="input_shape"):
        slimhub.flops(net, (0, 3))
    with pytest.raises(TypeError, match="nn.Layer"):
        slimhub.flops(lambda x: x, (1, 3))
