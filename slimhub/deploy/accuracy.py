"""Top-1 accuracy of a deployed file, computed by its runtime."""
from __future__ import annotations

import numpy as np


def top1(predictor, dataset, batch_size=256):
    """Share of ``dataset``'s (image, label) samples whose label is the argmax of
    ``predictor``'s output (a :class:`slimhub.deploy.Predictor`)."""
    if len(dataset) == 0:
        raise ValueError("top1: the dataset is empty")
    correct = 0
    for start in range(0, len(dataset), batch_size):
        samples = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
        x = np.stack([np.asarray(s[0], dtype="float32") for s in samples])
        y = np.array([int(np.asarray(s[1]).reshape(-1)[0]) for s in samples])
        correct += int((predictor(x).argmax(axis=1) == y).sum())
    return correct / len(dataset)
