"""ResNets: ImageNet-style 18/34/50 (key-compatible with ``paddle.vision.models``) and CIFAR-style 20/56."""
from __future__ import annotations

import paddle
from paddle import nn
from paddle.vision.models.resnet import BasicBlock, BottleneckBlock

from slimhub.model_zoo.models.common import check_positive_int, check_scale, scaled
from slimhub.model_zoo.registry import register_model

IMAGENET_WIDTHS = (64, 128, 256, 512)
CIFAR_WIDTHS = (16, 32, 64)
STEMS = ("imagenet", "cifar")


class ResNet(nn.Layer):
    """A stem, one stage of residual blocks per entry of ``depths``, global pooling, one Linear.

    stem="imagenet": 7x7 stride-2 conv and 3x3 stride-2 max pool (total stride 32).
    stem="cifar": 3x3 stride-1 conv, no pool (total stride 4, as in He et al. 2016, section 4.2).
    Each stage after the first halves the resolution; where a block changes shape, its shortcut
    is a 1x1 conv + BN (the paper's option B, so every shortcut is prunable the same way).
    ``scale`` multiplies every stage width.
    """

    def __init__(self, block, depths, widths, stem, in_channels=3, num_classes=1000, scale=1.0, name="resnet"):
        super().__init__()
        if stem not in STEMS:
            raise ValueError(f"{name}: stem must be one of {STEMS}, got {stem!r}")
        in_channels = check_positive_int(in_channels, "in_channels", name)
        num_classes = check_positive_int(num_classes, "num_classes", name)
        scale = check_scale(scale, name)
        planes = [scaled(w, scale, name) for w in widths]
        if stem == "imagenet":
            self.conv1 = nn.Conv2D(in_channels, planes[0], 7, stride=2, padding=3, bias_attr=False)
            self.maxpool = nn.MaxPool2D(kernel_size=3, stride=2, padding=1)
        else:
            self.conv1 = nn.Conv2D(in_channels, planes[0], 3, stride=1, padding=1, bias_attr=False)
            self.maxpool = None
        self.bn1 = nn.BatchNorm2D(planes[0])
        self.relu = nn.ReLU()
        self._stage_names = []
        inplanes = planes[0]
        for i, (depth, width) in enumerate(zip(depths, planes)):
            stage, inplanes = _stage(block, inplanes, width, depth, stride=1 if i == 0 else 2)
            self.add_sublayer(f"layer{i + 1}", stage)
            self._stage_names.append(f"layer{i + 1}")
        self.avgpool = nn.AdaptiveAvgPool2D((1, 1))
        self.fc = nn.Linear(inplanes, num_classes)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        if self.maxpool is not None:
            x = self.maxpool(x)
        for stage_name in self._stage_names:
            x = getattr(self, stage_name)(x)
        x = paddle.flatten(self.avgpool(x), 1)
        return self.fc(x)


def _stage(block, inplanes, planes, depth, stride):
    """``depth`` blocks, the first one strided; returns the stage and its output channels."""
    outplanes = planes * block.expansion
    downsample = None
    if stride != 1 or inplanes != outplanes:
        downsample = nn.Sequential(
            nn.Conv2D(inplanes, outplanes, 1, stride=stride, bias_attr=False),
            nn.BatchNorm2D(outplanes),
        )
    blocks = [block(inplanes, planes, stride, downsample)]
    blocks += [block(outplanes, planes) for _ in range(depth - 1)]
    return nn.Sequential(*blocks), outplanes


@register_model
def resnet18(in_channels=3, num_classes=1000, scale=1.0):
    """ResNet-18, ImageNet stem, basic blocks (2, 2, 2, 2)."""
    return ResNet(BasicBlock, (2, 2, 2, 2), IMAGENET_WIDTHS, "imagenet", in_channels, num_classes, scale, "resnet18")


@register_model
def resnet34(in_channels=3, num_classes=1000, scale=1.0):
    """ResNet-34, ImageNet stem, basic blocks (3, 4, 6, 3)."""
    return ResNet(BasicBlock, (3, 4, 6, 3), IMAGENET_WIDTHS, "imagenet", in_channels, num_classes, scale, "resnet34")


@register_model
def resnet50(in_channels=3, num_classes=1000, scale=1.0):
    """ResNet-50, ImageNet stem, bottleneck blocks (3, 4, 6, 3)."""
    return ResNet(BottleneckBlock, (3, 4, 6, 3), IMAGENET_WIDTHS, "imagenet", in_channels, num_classes, scale, "resnet50")


@register_model
def resnet20(in_channels=3, num_classes=10, scale=1.0):
    """ResNet-20, CIFAR stem, basic blocks (3, 3, 3) of 16/32/64 channels."""
    return ResNet(BasicBlock, (3, 3, 3), CIFAR_WIDTHS, "cifar", in_channels, num_classes, scale, "resnet20")


@register_model
def resnet56(in_channels=3, num_classes=10, scale=1.0):
    """ResNet-56, CIFAR stem, basic blocks (9, 9, 9) of 16/32/64 channels."""
    return ResNet(BasicBlock, (9, 9, 9), CIFAR_WIDTHS, "cifar", in_channels, num_classes, scale, "resnet56")
