"""slimhub: model compression for PaddlePaddle."""
import os

from slimhub.deploy.cpu import cpu_info

# Paddle's bundled MKL takes a slow path on AMD CPUs unless this is set before paddle loads
# (measured only there; nothing says it helps on Intel).
if cpu_info().is_amd:
    os.environ.setdefault("MKL_DEBUG_CPU_TYPE", "5")

from slimhub.flops import flops  # noqa: E402
from slimhub.recipe import load_recipe, run_recipe  # noqa: E402
from slimhub.trainer import Trainer  # noqa: E402

__version__ = "0.1.0"
__all__ = ["Trainer", "flops", "load_recipe", "run_recipe", "__version__"]
