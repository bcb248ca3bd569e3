"""A paddle.io.Dataset over in-memory numpy arrays (fast indexing, no per-sample decoding)."""
from __future__ import annotations

import numpy as np
import paddle


class ArrayDataset(paddle.io.Dataset):
    """Samples ``(images[i], labels[i])``.

    ``augment(image, rng)`` (optional) returns a randomly changed copy of one image; its
    ``rng`` is seeded by ``(seed, epoch, i)``, so every epoch sees new variants and a resumed
    run sees the same ones. The Trainer calls :meth:`set_epoch` before each epoch.
    """

    def __init__(self, images, labels, augment=None, seed=0):
        super().__init__()
        if len(images) != len(labels):
            raise ValueError(f"ArrayDataset: {len(images)} images but {len(labels)} labels")
        if augment is not None and not callable(augment):
            raise TypeError(f"ArrayDataset: augment must be callable(image, rng) or None, got {augment!r}")
        raw = np.asarray(labels)
        if raw.dtype.kind not in "iubf":
            raise TypeError(f"ArrayDataset: labels must be integers (class indices), got dtype {raw.dtype}")
        if raw.ndim > 1 and int(np.prod(raw.shape[1:])) != 1:
            raise ValueError(f"ArrayDataset: labels must be one class index per image, got shape {list(raw.shape)}")
        raw = raw.reshape(-1)
        if raw.dtype.kind == "f":
            bad = np.flatnonzero(~np.isfinite(raw) | (raw != np.round(raw)))
            if bad.size:
                raise ValueError(f"ArrayDataset: labels must be whole numbers (class indices); "
                                 f"labels[{bad[0]}] is {raw[bad[0]]!r}")
        self.images = images
        self.labels = raw.astype("int64").reshape(-1, 1)
        self.augment = augment
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch):
        self.epoch = int(epoch)

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        x = self.images[i]
        if self.augment is not None:
            x = self.augment(x, np.random.default_rng((self.seed, self.epoch, int(i))))
        return x, self.labels[i]


def crop_and_flip(padding, fill):
    """Augmentation for CHW images: a random crop of the image padded by ``padding`` pixels
    of value ``fill`` on each side, then a horizontal flip with probability 1/2."""
    def augment(x, rng):
        c, h, w = x.shape
        padded = np.full((c, h + 2 * padding, w + 2 * padding), fill, dtype=x.dtype)
        padded[:, padding:padding + h, padding:padding + w] = x
        top, left = rng.integers(0, 2 * padding + 1, size=2)
        out = padded[:, top:top + h, left:left + w]
        return np.ascontiguousarray(out[:, :, ::-1] if rng.random() < 0.5 else out)
    return augment
