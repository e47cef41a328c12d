"""Image classification data: a folder with one subfolder per class (or `train/`, `val/`, `test/`
folders of those), a CSV/JSONL manifest of `path,label[,split]`, or, with no path, the generated
digits (data/digit_images.py). Every file is decoded once, through `image_files.open_rgb`, when the
data is set up: a bad file stops the run naming it, or is counted and skipped (`on_bad_image=skip`).
Images are kept resized to `image_size` in one array (shared by DataLoader workers, not copied), or
read again for each batch (`in_memory=false`). Batches: `{"pixel_values": [B, 3, S, S], "labels": [B]}`."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional

import numpy as np
from torch.utils.data import DataLoader, Dataset

from lmforge.config.schema import NonNegative, Positive
from lmforge.data import image_transforms as transforms
from lmforge.data.base import DataModule
from lmforge.data.classification import sort_labels
from lmforge.data.digit_images import TASKS, generated_digits
from lmforge.data.image_files import IMAGE_SUFFIXES, BadImage, open_rgb
from lmforge.data.rand_augment import Magnitude
from lmforge.data.sampler import ResumableSampler
from lmforge.data.splits import split
from lmforge.data.tables import LINE, SUPPORTED, read_rows, require_columns
from lmforge.errors import UserError

log = logging.getLogger(__name__)
SPLITS = ("train", "val", "test")
SPLIT_NAMES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}


@dataclass(frozen=True)
class Item:
    """One labelled image file and where it was listed (the file, or `manifest:line`)."""

    path: Path
    label: str
    where: str


def folder_items(folder: Path) -> list[Item]:
    """The images of `folder/<class>/...` (any depth below the class folder), in name order."""
    items = []
    for class_dir in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for file in sorted(class_dir.rglob("*")):
            if file.is_file() and file.suffix.lower() in IMAGE_SUFFIXES:
                items.append(Item(file, class_dir.name, str(file)))
    return items


class EpochTaggedSampler(ResumableSampler):
    """The training order of ResumableSampler, each index given as `epoch * n + index`: the dataset
    draws a sample's augmentation from (seed, epoch, index), whichever worker loads it, before or
    after a resume."""

    def __iter__(self):
        for index in super().__iter__():
            yield self.epoch * self.n + index


class ImageSet(Dataset):
    """Images of one split, as normalised tensors; augmented when `augment` is given (training)."""

    def __init__(self, images: Optional[np.ndarray], paths: list[Path], labels: list[int], size: int,
                 mean: list[float], std: list[float], augment: Optional[transforms.Augment] = None, seed: int = 0):
        self.images, self.paths, self.labels, self.size = images, paths, labels, size
        self.mean, self.std = np.asarray(mean, np.float32), np.asarray(std, np.float32)
        self.augment, self.seed = augment, seed

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, tagged: int) -> dict[str, Any]:
        epoch, index = divmod(tagged, len(self.labels))
        pixels = self.images[index] if self.images is not None else transforms.square(open_rgb(self.paths[index]),
                                                                                      self.size)
        if self.augment is not None:
            pixels = self.augment(pixels, np.random.default_rng([self.seed, epoch, index]))
        return {"pixel_values": transforms.normalise(pixels, self.mean, self.std), "labels": self.labels[index]}


class ImageFolderDataModule(DataModule):
    """Labelled images from `path`: a class-per-subfolder folder, a folder of `train/` (`val/`, `test/`)
    such folders, or a `.csv`/`.jsonl` manifest (paths relative to it); null: the generated digits
    (`generated=digits|parity`, written once into `cache_dir`). Splits missing from the data are a
    deterministic, per-class split of train by `val_fraction` / `test_fraction`. The classes are those
    of the training images, or `classes` in that order (a run evaluated on other files keeps its own)."""

    takes_model_processor = True

    def __init__(self, path: Optional[str] = None, image_size: Positive = 32, batch_size: Positive = 64,
                 num_workers: NonNegative = 0, val_fraction: float = 0.1, test_fraction: float = 0.1,
                 split_seed: int = 0, on_bad_image: Literal["error", "skip"] = "error", augment: bool = True,
                 crop_scale: tuple[float, float] = (0.35, 1.0), hflip: float = 0.5, randaugment_ops: NonNegative = 0,
                 randaugment_magnitude: Magnitude = 9, in_memory: bool = True,
                 path_column: str = "path", label_column: str = "label", split_column: str = "split",
                 generated: Literal["digits", "parity"] = "digits", classes: Optional[list[str]] = None,
                 cache_dir: str = ".cache") -> None:
        super().__init__()
        self.path = Path(path).expanduser() if path else None
        self.image_size, self.batch_size, self.num_workers = image_size, batch_size, num_workers
        self.val_fraction, self.test_fraction, self.split_seed = val_fraction, test_fraction, split_seed
        self.on_bad_image, self.in_memory = on_bad_image, in_memory
        self.augment = transforms.Augment(tuple(crop_scale), hflip, randaugment_ops, randaugment_magnitude) \
            if augment else None
        self.columns = {"path": path_column, "label": label_column, "split": split_column}
        self.generated, self.cache_dir = generated, cache_dir
        self.classes = [str(c) for c in classes] if classes else None
        for key in ("val_fraction", "test_fraction"):
            if not 0 <= getattr(self, key) < 1:  # getattr: this module's own setting of that config key
                raise UserError(f"data.{key} must be in [0, 1), got {getattr(self, key)}")
        if not 0 < crop_scale[0] <= crop_scale[1] <= 1:
            raise UserError(f"data.crop_scale must be two fractions of the area, low <= high, got {list(crop_scale)}")
        if self.path is not None and not self.path.exists():
            raise UserError(f"data.path: no such folder or manifest: {path}")
        if self.path is not None and self.path.is_file() and not self.path.name.lower().endswith(SUPPORTED):
            raise UserError(f"data.path: {path} is a file but not a manifest ({', '.join(SUPPORTED)}); give a "
                            "folder of class subfolders or a manifest with path and label columns")
        if generated not in TASKS:
            raise UserError(f"data.generated must be one of {', '.join(TASKS)}, got {generated!r}")
        self._items: Optional[dict[str, list[Item]]] = None
        self._labels: Optional[list[str]] = None
        self._sets: Optional[dict[str, ImageSet]] = None
        self._processor: Any = None
        self._stats: Optional[tuple[list[float], list[float]]] = None

    # ---- listing and splitting (no decoding) -------------------------------------------------

    def _list(self) -> dict[str, list[Item]]:
        if self.path is None:
            return self._split_missing({"train": folder_items(generated_digits(self.cache_dir, self.generated))})
        if self.path.is_file():
            return self._split_missing(self._manifest(self.path))
        named = {SPLIT_NAMES[p.name]: p for p in self.path.iterdir() if p.is_dir() and p.name in SPLIT_NAMES}
        if "train" in named:
            return self._split_missing({name: folder_items(folder) for name, folder in named.items()})
        return self._split_missing({"train": folder_items(self.path)})

    def _manifest(self, manifest: Path) -> dict[str, list[Item]]:
        rows = read_rows(manifest)
        require_columns(manifest, rows, [self.columns["path"], self.columns["label"]],
                        ["data.path_column", "data.label_column"])
        out: dict[str, list[Item]] = {}
        for row in rows:
            where = f"{manifest}:{row[LINE]}"
            file, label = str(row.get(self.columns["path"], "")).strip(), str(row.get(self.columns["label"], "")).strip()
            if not file or not label:
                raise UserError(f"{where}: empty {'path' if not file else 'label'}")
            name = str(row.get(self.columns["split"]) or "train").strip().lower()
            if name not in SPLIT_NAMES:
                raise UserError(f"{where}: split '{name}' is not one of train, val, test")
            out.setdefault(SPLIT_NAMES[name], []).append(Item(manifest.parent / file, label, where))
        return out

    def _split_missing(self, items: dict[str, list[Item]]) -> dict[str, list[Item]]:
        """val/test split off train per class (by a hash of the file name) when the data has none."""
        where = self.path or "the generated digits"
        if not items.get("train"):
            raise UserError(f"data.path: no training images found in {where} (image files in class subfolders)")
        fractions = {name: getattr(self, f"{name}_fraction") for name in ("val", "test")  # getattr: own keys
                     if name not in items and getattr(self, f"{name}_fraction") > 0}
        out = {name: [] for name in SPLITS} | {k: v for k, v in items.items() if k != "train"}
        by_label: dict[str, list[Item]] = {}
        for item in items["train"]:
            by_label.setdefault(item.label, []).append(item)
        for label in sorted(by_label):
            parts = split(by_label[label], fractions, self.split_seed, key=lambda it: it.path.name, min_each=1)
            for name, part in parts.items():
                out[name].extend(part)
        if not out["val"]:
            raise UserError(f"{where}: no validation images (add a val/ folder or a split column, or set "
                            "data.val_fraction above 0)")
        if not out["test"]:
            out["test"] = out["val"]
        return out

    def _load(self) -> dict[str, list[Item]]:
        if self._items is None:
            items = self._list()
            labels = self.classes or sort_labels({it.label for it in items["train"]})
            for item in items["train"] if self.classes else ():
                if item.label not in labels:
                    raise UserError(f"{item.where}: class '{item.label}' is not one of data.classes ({', '.join(labels)})")
            if len(labels) < 2:
                raise UserError(f"data.path: the training images have only one class ({labels[0]}); need 2 or more")
            for name in ("val", "test"):
                for item in items[name]:
                    if item.label not in labels:
                        raise UserError(f"{item.where}: class '{item.label}' has no training images "
                                        f"(classes: {', '.join(labels[:20])})")
            self._items, self._labels = items, labels
        return self._items

    @property
    def labels(self) -> list[str]:
        self._load()
        return list(self._labels)

    @property
    def class_names(self) -> list[str]:
        return self.labels

    @property
    def dims(self) -> dict[str, Any]:
        return {"num_classes": len(self.labels), "labels": self.labels, "image_size": self.image_size}

    @property
    def test_paths(self) -> list[str]:
        """Files of the test split, in the order of `test_dataloader` (bad ones skipped)."""
        self.setup()
        return [str(p) for p in self._sets["test"].paths]

    @property
    def test_labels(self) -> list[str]:
        self.setup()
        return [self._labels[i] for i in self._sets["test"].labels]

    # ---- the processor (normalisation) ---------------------------------------------------------

    def set_processor(self, processor: Any) -> None:
        """Normalise as the model's own image processor does (the model fine-tuned from)."""
        self._stats = transforms.processor_stats(processor)

    @property
    def processor(self) -> Any:
        """The image processor saved with the run and exported beside the model: resize to
        `image_size`, normalise with the model's statistics or those of the training images."""
        if self._processor is None:
            self.setup()
            mean, std = self._stats
            self._processor = transforms.image_processor(self.image_size, mean, std)
        return self._processor

    # ---- decoding -----------------------------------------------------------------------------

    def _decode(self, items: list[Item]) -> tuple[list[np.ndarray], list[Item], list[str]]:
        """Each file decoded once: (images resized, the items that decoded, the errors of those that did not)."""
        images, kept, bad = [], [], []
        for item in items:
            try:
                images.append(transforms.square(open_rgb(item.path), self.image_size))
                kept.append(item)
            except BadImage as exc:
                if self.on_bad_image == "error":
                    raise BadImage(f"{exc} (listed at {item.where}; data.on_bad_image=skip skips such files)"
                                   if item.where != str(item.path) else str(exc)) from None
                bad.append(str(exc))
        return images, kept, bad

    def setup(self, stage: Optional[str] = None) -> None:
        if self._sets is not None:
            return
        items, index = self._load(), {label: i for i, label in enumerate(self._labels)}
        decoded, bad, total = {}, [], 0
        for name in SPLITS:
            if name == "test" and items["test"] is items["val"]:
                decoded["test"] = decoded["val"]
                continue
            images, kept, errors = self._decode(items[name])
            decoded[name], total = (images, kept), total + len(items[name])
            bad += errors
        if bad:
            log.warning("data.on_bad_image=skip: skipped %d of %d image files that do not decode (first: %s)",
                        len(bad), total, bad[0])
        if not decoded["train"][1] or not decoded["val"][1]:
            raise UserError(f"data.path: {self.path}: every train or validation image was skipped as unreadable")
        if self._stats is None:
            self._stats = transforms.channel_stats(decoded["train"][0])
        mean, std = self._stats
        self._sets = {}
        for name, (images, kept) in decoded.items():
            array = np.stack(images) if self.in_memory else None
            self._sets[name] = ImageSet(array, [it.path for it in kept], [index[it.label] for it in kept],
                                        self.image_size, mean, std, self.augment if name == "train" else None,
                                        self.run_seed)

    # ---- loaders ----------------------------------------------------------------------------------

    def _loader(self, name: str, train: bool = False) -> DataLoader:
        self.setup()
        return self.loader(self._sets[name], train=train)

    def train_sampler(self, n: int, batch_size: int) -> EpochTaggedSampler:
        """The base's resumable order, each index tagged with its epoch (the augmentation draws from it)."""
        return EpochTaggedSampler(n, seed=self.run_seed, shuffle=True, batch_size=batch_size, trainer=self.trainer)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test")

