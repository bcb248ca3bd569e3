"""A paddle.io.Dataset over in-memory numpy arrays (fast indexing, no per-sample decoding)."""
from __future__ import annotations

import numpy as np
import paddle


class ArrayDataset(paddle.io.Dataset):
    """Samples ``(images[i], labels[i])``; ``transform`` maps one image array to another."""

    def __init__(self, images, labels, transform=None):
        super().__init__()
        if len(images) != len(labels):
            raise ValueError(f"ArrayDataset: {len(images)} images but {len(labels)} labels")
        self.images = images
        self.labels = np.asarray(labels, dtype="int64").reshape(-1, 1)
        self.transform = transform

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        x = self.images[i]
        if self.transform is not None:
            x = self.transform(x)
        return x, self.labels[i]
