"""slimhub.modes.eval_mode: every training flag put back exactly as it was."""
import pytest
from paddle import nn

from slimhub.modes import eval_mode


def mixed_network():
    """Training, but with a frozen (eval-mode) backbone block."""
    net = nn.Sequential(nn.Sequential(nn.Conv2D(1, 2, 3), nn.BatchNorm2D(2)), nn.Dropout(0.5), nn.Flatten())
    net.train()
    net[0].eval()
    return net


def flags(network):
    return [layer.training for layer in network.sublayers(include_self=True)]


def test_eval_mode_puts_back_a_mixed_networks_flags():
    net = mixed_network()
    assert flags(net) == [True, False, False, False, True, True]
    with eval_mode(net) as inside:
        assert inside is net and flags(net) == [False] * 6
    assert flags(net) == [True, False, False, False, True, True]


def test_eval_mode_puts_back_the_flags_when_the_block_raises():
    net = mixed_network()
    with pytest.raises(RuntimeError, match="^inside$"):
        with eval_mode(net):
            raise RuntimeError("inside")
    assert flags(net) == [True, False, False, False, True, True]
