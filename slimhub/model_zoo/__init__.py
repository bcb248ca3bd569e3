"""Model zoo: architectures by name, pretrained entries, and a verified download cache.

>>> from slimhub.model_zoo import list_models, create_model, model_info
>>> list_models("resnet*")
>>> model = create_model("resnet20", in_channels=1, num_classes=10)
>>> model = create_model("resnet18", pretrained="imagenet")
"""
from slimhub.model_zoo.registry import (
    PretrainedEntry,
    UnknownModelError,
    create_model,
    list_models,
    model_info,
    record_pretrained,
    register_model,
)
from slimhub.model_zoo import models  # noqa: E402,F401  (registers the architectures)

__all__ = [
    "PretrainedEntry",
    "UnknownModelError",
    "create_model",
    "list_models",
    "model_info",
    "record_pretrained",
    "register_model",
]
