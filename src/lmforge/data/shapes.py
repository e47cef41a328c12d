"""A learnable COCO detection set generated offline: rectangles, ellipses and triangles of random colours,
sizes and positions on images of several sizes, drawn with Pillow and written once (the same files for
the same arguments) as an image folder and its `instances.json`. Category ids are not contiguous, as in
COCO, so the label mapping is exercised."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from lmforge.atomic import publish_dir

CATEGORIES = {1: "rectangle", 3: "ellipse", 7: "triangle"}
VERSION = 1  # bump when the drawing changes: the cache folder's name follows it


def shapes_dir(cache_dir: str | Path, num_images: int, seed: int) -> Path:
    """The folder of the generated set (`images/`, `instances.json`), written on first use."""
    target = Path(cache_dir) / "coco_shapes" / f"v{VERSION}-n{num_images}-seed{seed}"
    if not (target / "instances.json").is_file():
        with publish_dir(target) as tmp:
            write_shapes(tmp, num_images, seed)
    return target


def _overlaps(box: list[int], others: list[list[int]]) -> bool:
    x, y, w, h = box
    for ox, oy, ow, oh in others:
        inter = max(0, min(x + w, ox + ow) - max(x, ox)) * max(0, min(y + h, oy + oh) - max(y, oy))
        if inter > 0.2 * min(w * h, ow * oh):
            return True
    return False


def write_shapes(folder: Path, num_images: int, seed: int) -> None:
    """Write `num_images` PNGs into `folder/images` and their boxes into `folder/instances.json`."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    (folder / "images").mkdir(parents=True)
    images, annotations = [], []
    for image_id in range(1, num_images + 1):
        width, height = (int(v) for v in rng.integers(96, 161, size=2))
        background = tuple(int(v) for v in rng.integers(0, 90, size=3))
        canvas = Image.new("RGB", (width, height), background)
        draw = ImageDraw.Draw(canvas)
        boxes: list[list[int]] = []
        for _ in range(int(rng.integers(1, 4))):
            for _attempt in range(20):
                side = min(width, height)
                w, h = (int(v) for v in rng.integers(side // 5, side // 2 + 1, size=2))
                x, y = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
                if not _overlaps([x, y, w, h], boxes):
                    break
            else:
                continue
            category = int(rng.choice(list(CATEGORIES)))
            colour = tuple(int(v) for v in rng.integers(130, 256, size=3))
            corners = [x, y, x + w - 1, y + h - 1]
            if CATEGORIES[category] == "rectangle":
                draw.rectangle(corners, fill=colour)
            elif CATEGORIES[category] == "ellipse":
                draw.ellipse(corners, fill=colour)
            else:
                apex = x + int(rng.integers(0, w))
                draw.polygon([(apex, y), (x, y + h - 1), (x + w - 1, y + h - 1)], fill=colour)
            boxes.append([x, y, w, h])
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": category,
                                "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0})
        name = f"{image_id:05d}.png"
        canvas.save(folder / "images" / name)
        images.append({"id": image_id, "file_name": name, "width": width, "height": height})
    instances = {"images": images, "annotations": annotations,
                 "categories": [{"id": i, "name": n, "supercategory": "shape"} for i, n in CATEGORIES.items()]}
    (folder / "instances.json").write_text(json.dumps(instances) + "\n")
