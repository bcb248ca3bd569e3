"""slimhub: model compression for PaddlePaddle."""
from slimhub.flops import flops
from slimhub.trainer import Trainer

__version__ = "0.1.0"
__all__ = ["Trainer", "flops", "__version__"]
