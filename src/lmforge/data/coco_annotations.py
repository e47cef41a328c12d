"""COCO instances files (`instances_*.json`) read and checked: images, their boxes, and the categories
mapped to contiguous labels (0..C-1, in category-id order) and back. A key that is missing or of the
wrong kind is one line naming the file and the entry (`instances.json: annotations[3] has no 'bbox'`)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmforge.errors import UserError

log = logging.getLogger(__name__)


@dataclass
class CocoImage:
    """One image of an instances file and its boxes, in the file's pixels ([x, y, width, height])."""

    id: int
    file_name: str
    boxes: list[list[float]] = field(default_factory=list)
    category_ids: list[int] = field(default_factory=list)
    areas: list[float] = field(default_factory=list)
    crowd: list[int] = field(default_factory=list)


@dataclass
class Instances:
    """What an instances file holds: its images (file order) and categories (id -> name)."""

    path: Path
    images: list[CocoImage]
    categories: dict[int, str]


@dataclass(frozen=True)
class LabelMap:
    """Categories as contiguous labels: label i is category `ids[i]`, named `names[i]`."""

    ids: tuple[int, ...]
    names: tuple[str, ...]

    @classmethod
    def of(cls, categories: dict[int, str]) -> "LabelMap":
        ids = tuple(sorted(categories))
        return cls(ids, tuple(categories[i] for i in ids))

    def label(self, category_id: int) -> int:
        return self.ids.index(category_id)

    def category(self, label: int) -> int:
        return self.ids[label]


def _load(path: Path, key: str) -> dict:
    if not path.is_file():
        raise UserError(f"{key}: {path} is not a file (a COCO instances JSON)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text ({exc.reason})") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: not a COCO instances file (a JSON object with images, annotations, categories)")
    for name in ("images", "annotations", "categories"):
        if not isinstance(data.get(name), list):
            raise UserError(f"{path}: no '{name}' list (a COCO instances file has images, annotations and "
                            "categories)")
    return data


def _get(entry: Any, name: str, kind: type | tuple, path: Path, where: str) -> Any:
    """`entry[name]`, checked to be a `kind` (ints are not bools), else one line naming file and entry."""
    if not isinstance(entry, dict):
        raise UserError(f"{path}: {where} is not a JSON object")
    if name not in entry:
        raise UserError(f"{path}: {where} has no '{name}'")
    value = entry[name]
    if isinstance(value, bool) or not isinstance(value, kind):
        kinds = kind if isinstance(kind, tuple) else (kind,)
        raise UserError(f"{path}: {where}.{name} = {value!r} is not {' or '.join(k.__name__ for k in kinds)}")
    return value


def read_instances(path: str | Path, key: str = "data.annotations") -> Instances:
    """The images and categories of the instances file at `path` (`key`: the config key naming it).
    Boxes with no area (width or height <= 0) are dropped, counted in the log."""
    path = Path(path).expanduser()
    data = _load(path, key)
    categories: dict[int, str] = {}
    for i, entry in enumerate(data["categories"]):
        cid = _get(entry, "id", int, path, f"categories[{i}]")
        categories[cid] = str(_get(entry, "name", (str, int), path, f"categories[{i}]"))
    if not categories:
        raise UserError(f"{path}: 'categories' is empty: a detector needs at least one category")
    images: dict[int, CocoImage] = {}
    for i, entry in enumerate(data["images"]):
        image_id = _get(entry, "id", int, path, f"images[{i}]")
        if image_id in images:
            raise UserError(f"{path}: images[{i}].id = {image_id} is given twice")
        images[image_id] = CocoImage(image_id, _get(entry, "file_name", str, path, f"images[{i}]"))
    empty = 0
    for i, entry in enumerate(data["annotations"]):
        where = f"annotations[{i}]"
        image_id = _get(entry, "image_id", int, path, where)
        category_id = _get(entry, "category_id", int, path, where)
        box = _get(entry, "bbox", list, path, where)
        if image_id not in images:
            raise UserError(f"{path}: {where}.image_id = {image_id} names no image of 'images'")
        if category_id not in categories:
            raise UserError(f"{path}: {where}.category_id = {category_id} names no category of 'categories'")
        if len(box) != 4 or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in box):
            raise UserError(f"{path}: {where}.bbox = {box!r} is not [x, y, width, height]")
        if box[2] <= 0 or box[3] <= 0:
            empty += 1
            continue
        crowd = entry.get("iscrowd", 0)
        area = entry.get("area", box[2] * box[3])
        if isinstance(crowd, bool) or crowd not in (0, 1):
            raise UserError(f"{path}: {where}.iscrowd = {crowd!r} is not 0 or 1")
        if isinstance(area, bool) or not isinstance(area, (int, float)):
            raise UserError(f"{path}: {where}.area = {area!r} is not a number")
        image = images[image_id]
        image.boxes.append([float(v) for v in box])
        image.category_ids.append(category_id)
        image.areas.append(float(area))
        image.crowd.append(int(crowd))
    if empty:
        log.warning("%s: dropped %d boxes with no area (width or height <= 0)", path, empty)
    return Instances(path, list(images.values()), categories)
