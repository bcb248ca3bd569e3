"""VGG 11/16, with batch norm by default; key-compatible with ``paddle.vision.models.VGG``."""
from __future__ import annotations

import numbers

import paddle
from paddle import nn

from slimhub.model_zoo.models.common import check_positive_int, check_scale, scaled
from slimhub.model_zoo.registry import register_model

# conv widths at scale 1.0; "M" is a 2x2 stride-2 max pool (configurations A and D of Simonyan & Zisserman)
VGG11_LAYERS = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")
VGG16_LAYERS = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


class VGG(nn.Layer):
    """3x3 conv (+ BN) + ReLU layers with max pools, adaptive average pooling, a classifier.

    Pools round up (ceil mode) so inputs that are not multiples of 32 keep at least 1x1:
    28 -> 14 -> 7 -> 4 -> 2 -> 1; at 224x224 this is the same as rounding down.
    The classifier is Linear(C*pool_size^2, hidden) + ReLU + Dropout, twice, then
    Linear(hidden, num_classes), as in the paper with the defaults pool_size=7,
    hidden=4096; ``hidden=0`` makes it a single Linear (the small-input choice, with
    pool_size=1). ``scale`` multiplies every conv width and ``hidden``.
    """

    def __init__(self, layers, in_channels=3, num_classes=1000, scale=1.0, batch_norm=True,
                 pool_size=7, hidden=4096, name="vgg"):
        super().__init__()
        in_channels = check_positive_int(in_channels, "in_channels", name)
        num_classes = check_positive_int(num_classes, "num_classes", name)
        pool_size = check_positive_int(pool_size, "pool_size", name)
        scale = check_scale(scale, name)
        if not isinstance(batch_norm, bool):
            raise ValueError(f"{name}: batch_norm must be True or False, got {batch_norm!r}")
        if isinstance(hidden, bool) or not isinstance(hidden, numbers.Integral) or hidden < 0:
            raise ValueError(f"{name}: hidden must be a non-negative integer, got {hidden!r}")
        features = []
        channels = in_channels
        for item in layers:
            if item == "M":
                features.append(nn.MaxPool2D(kernel_size=2, stride=2, ceil_mode=True))
                continue
            width = scaled(item, scale, name)
            features.append(nn.Conv2D(channels, width, 3, padding=1))
            if batch_norm:
                features.append(nn.BatchNorm2D(width))
            features.append(nn.ReLU())
            channels = width
        self.features = nn.Sequential(*features)
        self.avgpool = nn.AdaptiveAvgPool2D((pool_size, pool_size))
        flat = channels * pool_size * pool_size
        if hidden == 0:
            self.classifier = nn.Sequential(nn.Linear(flat, num_classes))
        else:
            width = scaled(hidden, scale, name)
            self.classifier = nn.Sequential(
                nn.Linear(flat, width), nn.ReLU(), nn.Dropout(),
                nn.Linear(width, width), nn.ReLU(), nn.Dropout(),
                nn.Linear(width, num_classes),
            )

    def forward(self, x):
        x = self.avgpool(self.features(x))
        return self.classifier(paddle.flatten(x, 1))


@register_model
def vgg11(in_channels=3, num_classes=1000, scale=1.0, batch_norm=True, pool_size=7, hidden=4096):
    """VGG-11 (configuration A), batch norm after every conv unless ``batch_norm=False``."""
    return VGG(VGG11_LAYERS, in_channels, num_classes, scale, batch_norm, pool_size, hidden, "vgg11")


@register_model
def vgg16(in_channels=3, num_classes=1000, scale=1.0, batch_norm=True, pool_size=7, hidden=4096):
    """VGG-16 (configuration D), batch norm after every conv unless ``batch_norm=False``."""
    return VGG(VGG16_LAYERS, in_channels, num_classes, scale, batch_norm, pool_size, hidden, "vgg16")
