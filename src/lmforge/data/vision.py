"""Small image-classification data held in memory: scikit-learn's digits and MNIST (IDX files)."""

from __future__ import annotations

import gzip
import logging
import struct
import urllib.request
from pathlib import Path
from typing import Annotated, Optional

import numpy as np
import torch
from pydantic import Field
from torch.utils.data import DataLoader, TensorDataset

from lmforge.atomic import write_bytes
from lmforge.config.schema import NonNegative, Positive
from lmforge.data.base import DataModule
from lmforge.errors import UserError

log = logging.getLogger(__name__)

Split = tuple[np.ndarray, np.ndarray]
Fraction = Annotated[float, Field(gt=0, lt=1)]


class ArrayDataModule(DataModule):
    """Train/val/test arrays loaded once (by `load_splits`), served as (x, y) float/long batches."""

    def __init__(self, batch_size: Positive = 32, num_workers: NonNegative = 0, standardize: bool = True):
        super().__init__()
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.standardize = standardize
        self._splits: Optional[dict[str, Split]] = None

    def load_splits(self) -> dict[str, Split]:
        raise NotImplementedError

    @property
    def splits(self) -> dict[str, Split]:
        if self._splits is None:
            splits = self.load_splits()
            if self.standardize:
                # Zero mean, unit variance per input, from train statistics: Adam then converges in a
                # few epochs. The floor keeps always-blank pixels from blowing up.
                x_train = splits["train"][0]
                mean, std = x_train.mean(0), np.maximum(x_train.std(0), 0.1)
                splits = {k: (((x - mean) / std).astype(np.float32), y) for k, (x, y) in splits.items()}
            self._splits = splits
        return self._splits

    @property
    def dims(self) -> dict[str, int]:
        """What the model and module read from the data: input size and number of classes."""
        x, y = self.splits["train"]
        return {"input_size": int(np.prod(x.shape[1:])), "num_classes": int(y.max()) + 1}

    @property
    def class_names(self) -> list[str]:
        """The class indices as names: digits '0'-'9'."""
        return [str(i) for i in range(self.dims["num_classes"])]

    def _loader(self, split: str, shuffle: bool = False) -> DataLoader:
        x, y = self.splits[split]
        dataset = TensorDataset(torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y, dtype=torch.long))
        return self.loader(dataset, train=shuffle)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")


class DigitsDataModule(ArrayDataModule):
    """scikit-learn's 1,797 bundled 8x8 digits, scaled to [0, 1], in a fixed stratified split."""

    def __init__(self, batch_size: Positive = 32, val_fraction: Fraction = 0.1, test_fraction: Fraction = 0.2,
                 split_seed: int = 0, num_workers: NonNegative = 0, standardize: bool = True):
        super().__init__(batch_size, num_workers, standardize)
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.split_seed = split_seed

    def load_splits(self) -> dict[str, Split]:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        x, y = load_digits(return_X_y=True)
        x = (x / 16.0).astype(np.float32)
        x_rest, x_test, y_rest, y_test = train_test_split(
            x, y, test_size=self.test_fraction, stratify=y, random_state=self.split_seed)
        x_train, x_val, y_train, y_val = train_test_split(
            x_rest, y_rest, test_size=self.val_fraction / (1 - self.test_fraction), stratify=y_rest,
            random_state=self.split_seed)
        return {"train": (x_train, y_train), "val": (x_val, y_val), "test": (x_test, y_test)}


MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
MNIST_MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/",
                 "https://storage.googleapis.com/cvdf-datasets/mnist/")


class MNISTDataModule(ArrayDataModule):
    """MNIST from the standard IDX files (optionally .gz) under `root` (or `root/MNIST/raw`).

    Without the files it downloads them when allowed and possible; otherwise it says so in one
    line and falls back to the bundled digits, so the example runs on any machine.
    """

    def __init__(self, root: str = "data/mnist", download: bool = True, val_size: Positive = 5000,
                 batch_size: Positive = 32, num_workers: NonNegative = 0, split_seed: int = 0, standardize: bool = True):
        super().__init__(batch_size, num_workers, standardize)
        self.root = Path(root)
        self.download = download
        self.val_size = val_size
        self.split_seed = split_seed
        self.fallback: Optional[DigitsDataModule] = None

    def _find(self) -> Optional[dict[str, Path]]:
        for folder in (self.root, self.root / "MNIST" / "raw"):
            found = {}
            for key, name in MNIST_FILES.items():
                for candidate in (folder / name, folder / f"{name}.gz"):
                    if candidate.is_file():
                        found[key] = candidate
                        break
            if len(found) == len(MNIST_FILES):
                return found
        return None

    def _download(self) -> str:
        """Fetch the four files into `root`; returns why it failed ('' on success)."""
        reason = ""
        for mirror in MNIST_MIRRORS:
            try:
                for name in MNIST_FILES.values():
                    target = self.root / f"{name}.gz"
                    if not target.is_file():
                        with urllib.request.urlopen(f"{mirror}{name}.gz", timeout=20) as response:
                            write_bytes(target, response.read())
                return ""
            except OSError as exc:
                # getattr: URLError has a reason, other OSErrors not
                reason = str(getattr(exc, "reason", exc))
        return reason

    def load_splits(self) -> dict[str, Split]:
        files = self._find()
        if files is None and self.download:
            reason = self._download()
            files = self._find()
        else:
            reason = "download disabled (data.download=false)"
        if files is None:
            log.warning("data.root=%s has no MNIST IDX files and they cannot be downloaded (%s): "
                        "falling back to data=digits", self.root, reason)
            self.fallback = DigitsDataModule(batch_size=self.batch_size, num_workers=self.num_workers,
                                             standardize=False)  # standardized once, above
            return self.fallback.load_splits()
        x_train, y_train = read_idx(files["train_images"]), read_idx(files["train_labels"])
        x_test, y_test = read_idx(files["test_images"]), read_idx(files["test_labels"])
        if len(x_train) != len(y_train) or len(x_test) != len(y_test):
            raise UserError(f"{self.root}: MNIST image and label files have different lengths")
        order = np.random.default_rng(self.split_seed).permutation(len(x_train))
        val_size = min(self.val_size, len(x_train) // 5)
        val_idx, train_idx = order[:val_size], order[val_size:]
        x_train = (x_train.reshape(len(x_train), -1) / 255.0).astype(np.float32)
        x_test = (x_test.reshape(len(x_test), -1) / 255.0).astype(np.float32)
        return {"train": (x_train[train_idx], y_train[train_idx]), "val": (x_train[val_idx], y_train[val_idx]),
                "test": (x_test, y_test.astype(np.int64))}


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (the MNIST format: magic, dims, then unsigned bytes), gzipped or not."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
        zero, dtype, ndim = struct.unpack(">HBB", data[:4])
        if zero != 0 or dtype != 0x08:
            raise ValueError("bad magic number")
        shape = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
        array = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
        return array.reshape(shape).astype(np.int64 if ndim == 1 else np.uint8)
    except (OSError, ValueError, struct.error, EOFError) as exc:
        raise UserError(f"{path}: not a valid IDX file ({exc})") from exc
