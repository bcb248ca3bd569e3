"""Datasets a user may have on disk: an ImageNet-style folder and the CIFAR-10 archive."""
from __future__ import annotations

import os

from paddle.vision import transforms as T
from paddle.vision.datasets import Cifar10, DatasetFolder

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


def image_folder(root, split="train", image_size=224):
    """``root/<split>/<class>/<image>`` with ImageNet-style preprocessing.

    Training uses a random resized crop and flip; validation resizes and center-crops.
    """
    folder = os.path.join(root, split)
    if not os.path.isdir(folder):
        raise FileNotFoundError(
            f"image folder: {folder!r} does not exist; expected {root!r} to hold "
            f"'{split}/' with one subfolder per class")
    if split == "train":
        ops = [T.RandomResizedCrop(image_size), T.RandomHorizontalFlip()]
    else:
        ops = [T.Resize(int(image_size * 256 / 224)), T.CenterCrop(image_size)]
    transform = T.Compose(ops + [T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    return DatasetFolder(folder, transform=transform)


def cifar10(archive, split="train"):
    """CIFAR-10 from the local python-version tarball (cifar-10-python.tar.gz)."""
    if not os.path.isfile(archive):
        raise FileNotFoundError(
            f"cifar10: archive {archive!r} not found; pass the path of cifar-10-python.tar.gz")
    if split not in ("train", "test"):
        raise ValueError(f"cifar10: split must be 'train' or 'test', got {split!r}")
    ops = [T.RandomCrop(32, padding=4), T.RandomHorizontalFlip()] if split == "train" else []
    transform = T.Compose(ops + [T.ToTensor(), T.Normalize([0.4914, 0.4822, 0.4465],
                                                           [0.2470, 0.2435, 0.2616])])
    return Cifar10(data_file=archive, mode=split, transform=transform, download=False)
