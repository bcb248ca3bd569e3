"""Fashion-MNIST reading against hand-written idx files and the dataset's known counts."""
import gzip
import struct

import numpy as np
import pytest

from slimhub.data import ArrayDataset, fashion_mnist
from slimhub.data.arrays import crop_and_flip
from slimhub.data.fashion_mnist import MEAN, STD


def write_idx(path, array):
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_reads_idx_files_from_a_folder(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(7, 28, 28))
    labels = np.array([3, 1, 4, 1, 5, 9, 2])
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", images)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", labels)
    data = fashion_mnist("test", data_dir=str(tmp_path), normalize=False)
    assert len(data) == 7
    x, y = data[4]
    assert x.shape == (1, 28, 28) and x.dtype == np.float32
    np.testing.assert_allclose(x[0], images[4] / 255.0, rtol=1e-6)
    assert y.tolist() == [5]
    monkeypatch.setenv("SLIMHUB_DATA", str(tmp_path))
    x, _ = fashion_mnist("test", limit=3)[2]
    np.testing.assert_allclose(x[0], (images[2] / 255.0 - MEAN) / STD, rtol=1e-5)
    assert len(fashion_mnist("test", limit=3)) == 3


def test_missing_files_say_where_and_how(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        fashion_mnist("train", data_dir=str(tmp_path))
    assert str(tmp_path) in str(err.value) and "apt-get install -y dataset-fashion-mnist" in str(err.value)
    with pytest.raises(ValueError, match="split must be"):
        fashion_mnist("val")


def test_corrupt_file_is_named(tmp_path):
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", np.zeros((2, 28, 28)))
    with gzip.open(tmp_path / "t10k-labels-idx1-ubyte.gz", "wb") as f:
        f.write(struct.pack(">HBBI", 0, 8, 1, 5) + b"\x01\x02")
    with pytest.raises(ValueError, match="t10k-labels-idx1-ubyte.gz: header promises"):
        fashion_mnist("test", data_dir=str(tmp_path))


def test_system_package_holds_the_real_dataset():
    test = fashion_mnist("test", normalize=False)
    assert len(test) == 10000
    assert np.bincount(test.labels.ravel()).tolist() == [1000] * 10  # balanced by construction
    train = fashion_mnist("train", limit=100)
    assert len(train) == 100


def test_augmentation_is_a_padded_crop_and_flip_seeded_by_epoch_and_index():
    images = np.arange(2 * 28 * 28, dtype="float32").reshape(2, 1, 28, 28)
    data = ArrayDataset(images, [0, 1], augment=crop_and_flip(2, np.float32(-1)), seed=5)
    for epoch in (0, 3):
        data.set_epoch(epoch)
        for i in (0, 1):
            rng = np.random.default_rng((5, epoch, i))
            top, left = rng.integers(0, 5, size=2)
            expected = np.pad(images[i], ((0, 0), (2, 2), (2, 2)), constant_values=-1)[:, top:top + 28, left:left + 28]
            if rng.random() < 0.5:
                expected = expected[:, :, ::-1]
            np.testing.assert_array_equal(data[i][0], expected)
    data.set_epoch(0)
    first = data[0][0]
    data.set_epoch(1)
    assert not np.array_equal(first, data[0][0])  # a new variant each epoch
    data.set_epoch(0)
    np.testing.assert_array_equal(first, data[0][0])  # and the same one again on resume
