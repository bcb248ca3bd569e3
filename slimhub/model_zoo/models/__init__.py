"""The zoo's architectures; importing this package registers them."""
from slimhub.model_zoo.models.mobilenet_v1 import MobileNetV1
from slimhub.model_zoo.models.resnet import ResNet
from slimhub.model_zoo.models.vgg import VGG

__all__ = ["MobileNetV1", "ResNet", "VGG"]
