"""Running a network in eval mode for a moment and putting every training flag back."""
from contextlib import contextmanager


@contextmanager
def eval_mode(network):
    """``network.eval()`` inside the block; afterwards each sublayer's ``training`` flag is
    what it was before (a network may mix train- and eval-mode sublayers, e.g. a frozen
    backbone), also when the block raises."""
    flags = [(layer, layer.training) for layer in network.sublayers(include_self=True)]
    network.eval()
    try:
        yield network
    finally:
        for layer, training in flags:
            layer.training = training
