"""MobileNetV1 with a width multiplier, key-compatible with ``paddle.vision.models.MobileNetV1``."""
from __future__ import annotations

import paddle
from paddle import nn
from paddle.vision.models.mobilenetv1 import DepthwiseSeparable
from paddle.vision.ops import ConvNormActivation

from slimhub.model_zoo.models.common import check_positive_int, check_scale, scaled
from slimhub.model_zoo.registry import register_model

# (sublayer name, input channels, output channels, stride) at scale 1.0
_BLOCKS = (
    ("conv2_1", 32, 64, 1),
    ("conv2_2", 64, 128, 2),
    ("conv3_1", 128, 128, 1),
    ("conv3_2", 128, 256, 2),
    ("conv4_1", 256, 256, 1),
    ("conv4_2", 256, 512, 2),
    ("conv5_1", 512, 512, 1),
    ("conv5_2", 512, 512, 1),
    ("conv5_3", 512, 512, 1),
    ("conv5_4", 512, 512, 1),
    ("conv5_5", 512, 512, 1),
    ("conv5_6", 512, 1024, 2),
    ("conv6", 1024, 1024, 1),
)


class MobileNetV1(nn.Layer):
    """MobileNetV1: a 3x3 stem then 13 depthwise-separable blocks, global pooling, one Linear.

    ``scale`` multiplies every layer's channel count (the paper's width multiplier alpha).
    Total stride 32: 224x224 inputs end at 7x7, 28x28 inputs at 1x1. ``small_input=True``
    (for 28x28 or 32x32 images) gives the stem and the first downsampling block stride 1:
    total stride 8, so 28x28 inputs end at 4x4; the weights keep the same shapes and names.
    """

    def __init__(self, in_channels=3, num_classes=1000, scale=1.0, small_input=False):
        super().__init__()
        name = "mobilenet_v1"
        in_channels = check_positive_int(in_channels, "in_channels", name)
        num_classes = check_positive_int(num_classes, "num_classes", name)
        scale = check_scale(scale, name)
        if not isinstance(small_input, bool):
            raise ValueError(f"{name}: small_input must be true or false, got {small_input!r}")
        self.conv1 = ConvNormActivation(in_channels, scaled(32, scale, name), kernel_size=3,
                                        stride=1 if small_input else 2, padding=1)
        self._block_names = []
        for block_name, cin, cout, stride in _BLOCKS:
            if small_input and block_name == "conv2_2":
                stride = 1
            block = DepthwiseSeparable(
                in_channels=scaled(cin, scale, name), out_channels1=cin, out_channels2=cout,
                num_groups=cin, stride=stride, scale=scale,
            )
            self.add_sublayer(block_name, block)
            self._block_names.append(block_name)
        self.pool2d_avg = nn.AdaptiveAvgPool2D(1)
        self.fc = nn.Linear(scaled(1024, scale, name), num_classes)

    def forward(self, x):
        x = self.conv1(x)
        for block_name in self._block_names:
            x = getattr(self, block_name)(x)
        x = paddle.flatten(self.pool2d_avg(x), 1)
        return self.fc(x)


@register_model
def mobilenet_v1(in_channels=3, num_classes=1000, scale=1.0, small_input=False):
    """MobileNetV1 with width multiplier ``scale`` (Howard et al. 2017); ``small_input``: total
    stride 8 instead of 32, for 28x28 / 32x32 images."""
    return MobileNetV1(in_channels=in_channels, num_classes=num_classes, scale=scale, small_input=small_input)
