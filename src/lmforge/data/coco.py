"""Object detection data in COCO form: an instances JSON and a folder of images (with no paths, a
generated set of shapes). Each image is decoded once (`image_files.open_rgb`), resized to
`image_size` x `image_size` (bilinear, as the exported DETR image processor does) and kept in a
memory-mapped cache that DataLoader workers share without copying; boxes become the model's
normalised (cx, cy, w, h), which a resize to a fixed size leaves unchanged.

Batches are `{"pixel_values": [B, 3, S, S] normalised floats, "labels": [one dict per image]}`; each
dict holds the training targets (`class_labels`, `boxes`) and what evaluation needs in the original
image's pixels (`image_id`, `orig_size` (h, w), `eval_boxes` COCO's xywh, `eval_labels`, `area`, `iscrowd`).
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

import numpy as np
import torch
from pydantic import Field
from torch.utils.data import DataLoader, Dataset

from lmforge.atomic import publish_dir, write_json
from lmforge.config.schema import NonNegative, Positive
from lmforge.data.base import DataModule
from lmforge.data.coco_annotations import CocoImage, Instances, LabelMap, read_instances
from lmforge.data.splits import split
from lmforge.errors import UserError

log = logging.getLogger(__name__)

Fraction = Annotated[float, Field(ge=0, lt=1)]
#: The normalisation of DETR's image processor (ImageNet statistics), applied to every batch.
IMAGE_MEAN = (0.485, 0.456, 0.406)
IMAGE_STD = (0.229, 0.224, 0.225)
CACHE_VERSION = 1


def _cache_key(instances: Instances, images_dir: Path, size: int, on_bad_image: str) -> str:
    stat = instances.path.stat()
    text = (f"{instances.path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}:{images_dir.resolve()}:{size}:"
            f"{on_bad_image}:{CACHE_VERSION}")
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def decoded(instances: Instances, images_dir: Path, size: int, cache_dir: Path,
            on_bad_image: str) -> tuple[Path, list[CocoImage], list[tuple[int, int]]]:
    """(pixels.npy [N, size, size, 3] uint8, the N images kept, their original (width, height)), written
    to the cache once per instances file, image folder and size. A missing or unreadable image stops
    with its path (`on_bad_image=error`) or is left out and counted (`skip`)."""
    from PIL import Image

    from lmforge.data.image_files import BadImage, open_rgb

    folder = cache_dir / "coco" / _cache_key(instances, images_dir, size, on_bad_image)
    if not (folder / "index.json").is_file():
        with publish_dir(folder) as tmp:
            pixels = np.lib.format.open_memmap(tmp / "pixels.npy", mode="w+", dtype=np.uint8,
                                               shape=(len(instances.images), size, size, 3))
            kept, sizes, skipped = [], [], []
            for image in instances.images:
                path = images_dir / image.file_name
                try:
                    if not path.is_file():
                        raise BadImage(f"{path}: no such image file (named by {instances.path})")
                    rgb = open_rgb(path)
                except BadImage as exc:
                    if on_bad_image == "error":
                        raise UserError(f"{exc} (data.on_bad_image=skip leaves such images out)") from None
                    skipped.append(str(path))
                    continue
                pixels[len(kept)] = np.asarray(rgb.resize((size, size), Image.BILINEAR))
                kept.append(image.id)
                sizes.append(rgb.size)
            pixels.flush()
            del pixels
            write_json(tmp / "index.json", {"ids": kept, "sizes": sizes, "skipped": skipped})
    index = json.loads((folder / "index.json").read_text())
    if index["skipped"]:
        log.warning("%s: skipped %d unreadable or missing images (data.on_bad_image=skip), the first: %s",
                    instances.path, len(index["skipped"]), index["skipped"][0])
    if not index["ids"]:
        raise UserError(f"{instances.path}: none of its images in {images_dir} could be read")
    by_id = {image.id: image for image in instances.images}
    return folder / "pixels.npy", [by_id[i] for i in index["ids"]], [tuple(s) for s in index["sizes"]]


class DetectionSet(Dataset):
    """Rows `rows` of a decoded cache as (pixels uint8 [3, S, S], target dict); the memory map is
    opened on first use in each process (a worker does not copy the images)."""

    def __init__(self, pixels: Path, images: list[CocoImage], sizes: list[tuple[int, int]], rows: list[int],
                 labels: LabelMap):
        self.pixels_path, self.images, self.sizes, self.rows, self.labels = pixels, images, sizes, rows, labels
        self._pixels: Optional[np.ndarray] = None

    def __len__(self) -> int:
        return len(self.rows)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_pixels": None}  # workers open their own memory map

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if self._pixels is None:
            self._pixels = np.load(self.pixels_path, mmap_mode="r")
        row = self.rows[i]
        image, (width, height) = self.images[row], self.sizes[row]
        pixels = torch.from_numpy(np.array(self._pixels[row])).permute(2, 0, 1)
        boxes = torch.tensor(image.boxes, dtype=torch.float32).reshape(-1, 4)
        labels = torch.tensor([self.labels.label(c) for c in image.category_ids], dtype=torch.long)
        crowd = torch.tensor(image.crowd, dtype=torch.long)
        corners = torch.cat([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], 1)
        scale = torch.tensor([width, height, width, height], dtype=torch.float32)
        clipped = torch.minimum(corners.clamp(min=0), scale)
        centre = torch.cat([(clipped[:, :2] + clipped[:, 2:]) / 2, clipped[:, 2:] - clipped[:, :2]], 1) / scale
        train = (crowd == 0) & (centre[:, 2] > 0) & (centre[:, 3] > 0)  # DETR trains on non-crowd boxes
        return pixels, {"class_labels": labels[train], "boxes": centre[train], "image_id": torch.tensor(image.id),
                        "orig_size": torch.tensor([height, width]),
                        "eval_boxes": torch.tensor(image.boxes, dtype=torch.float64).reshape(-1, 4),
                        "eval_labels": labels, "area": torch.tensor(image.areas, dtype=torch.float64), "iscrowd": crowd}


def collate(items: list[tuple[torch.Tensor, dict]]) -> dict[str, Any]:
    """Stack the images, scaled to [0, 1] and normalised as DETR's image processor does; targets as a list."""
    pixels = torch.stack([pixels for pixels, _ in items]).float() / 255.0
    mean = torch.tensor(IMAGE_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGE_STD).view(1, 3, 1, 1)
    return {"pixel_values": (pixels - mean) / std, "labels": [target for _, target in items]}


class CocoDetectionDataModule(DataModule):
    """COCO instances + image folder, split into train/val/test.

    Validation is `val_annotations` (+ `val_images`, default `images`), else a `val_fraction` of
    `annotations` held out by a hash of each file name (the same split whatever the run's seed); test is
    `test_annotations`, else a `test_fraction` held out likewise, else the validation images.
    Categories come from the training file, sorted by id, as labels 0..C-1 (`label_map` maps back).
    """

    def __init__(self, annotations: Optional[str] = None, images: Optional[str] = None,
                 val_annotations: Optional[str] = None, val_images: Optional[str] = None,
                 test_annotations: Optional[str] = None, test_images: Optional[str] = None,
                 val_fraction: Fraction = 0.1, test_fraction: Fraction = 0.0, split_seed: int = 0,
                 image_size: Positive = 128, batch_size: Positive = 8, num_workers: NonNegative = 0,
                 on_bad_image: Literal["error", "skip"] = "error", cache_dir: str = ".cache",
                 generated_images: Positive = 600):
        super().__init__()
        if annotations is None and (images or val_annotations or test_annotations):
            raise UserError("data.annotations is not set: give the COCO instances JSON of the training images "
                            "(or no paths at all, for the generated shapes)")
        if annotations is not None and val_annotations is None and val_fraction == 0:
            raise UserError("data.val_fraction is 0 and data.val_annotations is not set: nothing to validate on")
        self.paths = {"train": (annotations, images), "val": (val_annotations, val_images or images),
                      "test": (test_annotations, test_images or images)}
        self.val_fraction, self.test_fraction, self.split_seed = val_fraction, test_fraction, split_seed
        self.image_size, self.batch_size, self.num_workers = image_size, batch_size, num_workers
        self.on_bad_image, self.cache_dir, self.generated_images = on_bad_image, Path(cache_dir), generated_images
        self.label_map: Optional[LabelMap] = None
        self.sets: dict[str, DetectionSet] = {}

    def _instances(self, stage: str) -> tuple[Instances, Path]:
        annotations, images = self.paths[stage]
        key = "data.annotations" if stage == "train" else f"data.{stage}_annotations"
        if annotations is None:  # the generated set (train only asks: the others are held out of it)
            from lmforge.data.shapes import shapes_dir

            folder = shapes_dir(self.cache_dir, self.generated_images, seed=0)
            annotations, images = str(folder / "instances.json"), str(folder / "images")
        instances = read_instances(annotations, key)
        folder = Path(images).expanduser() if images else instances.path.parent
        if not folder.is_dir():
            raise UserError(f"data.{'' if stage == 'train' else stage + '_'}images: {folder} is not a directory")
        return instances, folder

    @property
    def processor(self) -> Any:
        """The image processor that prepares an image as this data does: saved with the run, exported."""
        return detr_image_processor(self.image_size)

    def prepare_data(self) -> None:
        if self.sets:
            return
        instances, folder = self._instances("train")
        self.label_map = LabelMap.of(instances.categories)
        pixels, images, sizes = decoded(instances, folder, self.image_size, self.cache_dir, self.on_bad_image)
        held = {name: fraction for name, fraction in (("val", self.val_fraction), ("test", self.test_fraction))
                if self.paths[name][0] is None and fraction > 0}
        parts = split(list(range(len(images))), held, self.split_seed, key=lambda row: images[row].file_name)
        for stage, rows in parts.items():
            self.sets[stage] = DetectionSet(pixels, images, sizes, rows, self.label_map)
        for stage in ("val", "test"):
            if self.paths[stage][0] is not None:
                self.sets[stage] = self._own_set(stage)
        self.sets.setdefault("test", self.sets["val"])
        for stage, dataset in self.sets.items():
            if len(dataset) == 0:
                raise UserError(f"the {stage} split has no images: give data.{stage}_annotations or raise "
                                f"data.{stage}_fraction")

    def _own_set(self, stage: str) -> DetectionSet:
        instances, folder = self._instances(stage)
        unknown = sorted(set(instances.categories) - set(self.label_map.ids))
        if unknown:
            raise UserError(f"data.{stage}_annotations: {instances.path} has categories {unknown} that the training "
                            f"file {self.paths['train'][0]} does not")
        pixels, images, sizes = decoded(instances, folder, self.image_size, self.cache_dir, self.on_bad_image)
        return DetectionSet(pixels, images, sizes, list(range(len(images))), self.label_map)

    @property
    def dims(self) -> dict[str, Any]:
        self.prepare_data()
        return {"num_labels": len(self.label_map.ids), "labels": list(self.label_map.names)}

    @property
    def class_names(self) -> Optional[list[str]]:
        return list(self.label_map.names) if self.label_map else None

    def _loader(self, stage: str, shuffle: bool = False) -> DataLoader:
        self.prepare_data()
        return self.loader(self.sets[stage], train=shuffle, collate_fn=collate)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")


def detr_image_processor(image_size: int) -> Any:
    """The image processor that prepares an image as `data=coco_detection` does: resized to
    `image_size` x `image_size` (bilinear), scaled to [0, 1], normalised with ImageNet statistics."""
    from transformers.models.detr.image_processing_pil_detr import DetrImageProcessorPil

    return DetrImageProcessorPil(size={"height": image_size, "width": image_size}, do_pad=False,
                                 image_mean=list(IMAGE_MEAN), image_std=list(IMAGE_STD))
