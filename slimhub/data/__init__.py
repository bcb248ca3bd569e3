"""Datasets read from local files; nothing is downloaded."""
from slimhub.data.arrays import ArrayDataset
from slimhub.data.fashion_mnist import fashion_mnist
from slimhub.data.folders import cifar10, image_folder

__all__ = ["ArrayDataset", "fashion_mnist", "image_folder", "cifar10"]
