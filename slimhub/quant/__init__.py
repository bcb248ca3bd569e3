"""Quantization: fake-quant training (QAT), post-training calibration (PTQ), BatchNorm
folding and int8 export. Importing this package registers the export formats
``"paddle_int8"``, ``"onnx_int8"``, ``"onnx"``, ``"openvino_int8"`` and ``"openvino"`` with :func:`slimhub.export.export`."""
from slimhub.export import export
from slimhub.quant.exporters import deployment_form
from slimhub.quant.fold_bn import conv_bn_pairs, fold_bn
from slimhub.quant.ptq import CALIBRATORS, calibrate
from slimhub.quant.quanters import QUANTERS, fake_quant
from slimhub.quant.wrap import QuantConfig, quantize, quantized_layers, strip_quant

__all__ = [
    "CALIBRATORS", "QUANTERS", "QuantConfig", "calibrate", "conv_bn_pairs", "deployment_form",
    "export", "fake_quant", "fold_bn", "quantize", "quantized_layers", "strip_quant",
]
