"""The real Fashion-MNIST, read offline from its original idx files."""
from __future__ import annotations

import gzip
import os
import struct

import numpy as np

from slimhub.data.arrays import ArrayDataset, crop_and_flip

SYSTEM_DIR = "/usr/share/datasets/fashion-mnist"
INSTALL_HINT = "sudo apt-get install -y dataset-fashion-mnist"
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
           "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
_FILES = {"train": "train", "test": "t10k"}
# Mean and standard deviation of the training images scaled to [0, 1].
MEAN, STD = 0.2860, 0.3530


def _candidate_dirs(data_dir):
    if data_dir is not None:
        return [("data_dir argument", data_dir)]
    dirs = []
    if os.environ.get("SLIMHUB_DATA"):
        dirs.append(("SLIMHUB_DATA", os.environ["SLIMHUB_DATA"]))
    dirs.append(("system package", SYSTEM_DIR))
    return dirs


def _idx_paths(folder, prefix):
    for suffix in (".gz", ""):
        images = os.path.join(folder, f"{prefix}-images-idx3-ubyte{suffix}")
        labels = os.path.join(folder, f"{prefix}-labels-idx1-ubyte{suffix}")
        if os.path.isfile(images) and os.path.isfile(labels):
            return images, labels
    return None


def read_idx(path):
    """Read an idx file (optionally gzipped) into a numpy array.

    Paddle's own FashionMNIST parser decodes image by image (seconds per split) and
    accepts only sample counts that are multiples of 100; this reads in one go.
    """
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte idx file (header {data[:4]!r})")
    shape = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise ValueError(f"{path}: header promises shape {shape} but holds {body.size} bytes")
    return body.reshape(shape)


def fashion_mnist(split="train", data_dir=None, limit=None, normalize=True, augment=False, seed=0):
    """Fashion-MNIST ``split`` ("train": 60k, "test": 10k) as float32 (1, 28, 28) images.

    Looks in ``data_dir``, else in ``$SLIMHUB_DATA`` then the Debian package's folder.
    ``limit`` keeps the first N samples (for quick runs). ``normalize`` standardizes
    pixels with the training set's mean and std, else they are scaled to [0, 1].
    ``augment`` applies the usual training augmentation of this dataset: a random 28x28
    crop of the image padded by 2 background pixels, and a horizontal flip half the time
    (seeded by ``seed``, the epoch and the index; see :class:`ArrayDataset`).
    """
    if split not in _FILES:
        raise ValueError(f"fashion_mnist: split must be 'train' or 'test', got {split!r}")
    if limit is not None and (not isinstance(limit, int) or limit <= 0):
        raise ValueError(f"fashion_mnist: limit must be a positive integer, got {limit!r}")
    looked = []
    for origin, folder in _candidate_dirs(data_dir):
        paths = _idx_paths(folder, _FILES[split])
        if paths is not None:
            break
        looked.append(f"{folder} ({origin})")
    else:
        raise FileNotFoundError(
            f"Fashion-MNIST {split} files ({_FILES[split]}-images-idx3-ubyte[.gz], "
            f"{_FILES[split]}-labels-idx1-ubyte[.gz]) not found in: {'; '.join(looked)}. "
            f"Install them with: {INSTALL_HINT}")
    images, labels = read_idx(paths[0]), read_idx(paths[1])
    if len(images) != len(labels):
        raise ValueError(f"{paths[0]} holds {len(images)} images but {paths[1]} {len(labels)} labels")
    n = len(images) if limit is None else min(limit, len(images))
    images = images[:n].astype("float32").reshape(n, 1, 28, 28) / 255.0
    background = 0.0
    if normalize:
        images = (images - MEAN) / STD
        background = (0.0 - MEAN) / STD
    if not isinstance(augment, bool):
        raise ValueError(f"fashion_mnist: augment must be true or false, got {augment!r}")
    return ArrayDataset(images, labels[:n], augment=crop_and_flip(2, np.float32(background)) if augment else None,
                        seed=seed)
