"""MNIST from IDX files the test writes (the real reader), the offline fallback, bad files."""

from __future__ import annotations

import gzip
import logging
import struct
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_digits

from lmforge.data.vision import MNISTDataModule
from lmforge.errors import UserError


def write_idx(path: Path, array: np.ndarray) -> None:
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)


def fake_mnist(root: Path) -> None:
    """28x28 images made of the bundled 8x8 digits scaled up 3x (real pixels, real labels)."""
    x, y = load_digits(return_X_y=True)
    images = np.zeros((len(x), 28, 28), dtype=np.uint8)
    images[:, 2:26, 2:26] = np.kron(x.reshape(-1, 8, 8) * 15, np.ones((3, 3)))
    root.mkdir(parents=True, exist_ok=True)
    write_idx(root / "train-images-idx3-ubyte.gz", images[:1500])
    write_idx(root / "train-labels-idx1-ubyte.gz", y[:1500])
    write_idx(root / "t10k-images-idx3-ubyte", images[1500:])  # plain, not gzipped: both are read
    write_idx(root / "t10k-labels-idx1-ubyte", y[1500:])


def test_mnist_idx_files_are_read(tmp_path: Path):
    fake_mnist(tmp_path / "MNIST" / "raw")  # torchvision's layout is found too
    data = MNISTDataModule(root=str(tmp_path), download=False, val_size=200)
    assert data.dims == {"input_size": 784, "num_classes": 10}
    assert [len(data.splits[s][0]) for s in ("train", "val", "test")] == [1300, 200, 297]
    x, y = next(iter(data.train_dataloader()))
    assert x.shape == (32, 784) and y.dtype.is_floating_point is False


def test_without_files_or_network_it_falls_back_to_digits(tmp_path: Path, caplog):
    data = MNISTDataModule(root=str(tmp_path / "nothing"), download=False)
    with caplog.at_level(logging.WARNING):
        assert data.dims == {"input_size": 64, "num_classes": 10}
    assert "falling back to data=digits" in caplog.text and "nothing" in caplog.text


def test_a_corrupt_idx_file_names_the_file(tmp_path: Path):
    fake_mnist(tmp_path)
    bad = tmp_path / "t10k-labels-idx1-ubyte"
    bad.write_bytes(b"\x01\x02garbage")
    with pytest.raises(UserError, match="t10k-labels-idx1-ubyte"):
        MNISTDataModule(root=str(tmp_path), download=False).dims
