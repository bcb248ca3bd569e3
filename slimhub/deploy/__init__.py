"""Deployment: the inference runtimes behind one loader, checks of exported files against
their network, and the CPU kind that decides how int8 kernels compute."""
from slimhub.deploy.accuracy import top1
from slimhub.deploy.cpu import CPU, cpu_info
from slimhub.deploy.runtimes import PRECISIONS, RUNTIMES, Predictor, default_runtime, load
from slimhub.deploy.verify import ExportMismatch, verify

__all__ = ["CPU", "ExportMismatch", "PRECISIONS", "Predictor", "RUNTIMES", "cpu_info",
           "default_runtime", "load", "top1", "verify"]
