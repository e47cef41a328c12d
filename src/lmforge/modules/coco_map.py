"""COCO's box mAP as a torchmetrics `Metric`: detections and ground truth gathered over an epoch (and
across ranks), then scored by COCO's own evaluation (`COCOeval` of pycocotools, or of faster_coco_eval
when installed). torchmetrics' `MeanAveragePrecision` computes the same with the same libraries but
cannot be built without torchvision, which does not install beside the CPU torch this project uses."""

from __future__ import annotations

import contextlib
import importlib.util
import io
from typing import Any

import torch
from torchmetrics import Metric

from lmforge.errors import UserError

#: COCOeval's 12 summary numbers, in its order, under torchmetrics' names.
STATS = ("map", "map_50", "map_75", "map_small", "map_medium", "map_large",
         "mar_1", "mar_10", "mar_100", "mar_small", "mar_medium", "mar_large")


def coco_backend(backend: str) -> str:
    """The COCO evaluation library: `auto` is faster_coco_eval when installed, else pycocotools
    (lmforge[vision]); one line naming the extra when the one asked for is missing."""
    if backend == "auto":
        backend = "faster_coco_eval" if importlib.util.find_spec("faster_coco_eval") else "pycocotools"
    if backend not in ("pycocotools", "faster_coco_eval"):
        raise UserError(f"module.map_backend={backend}: expected auto, pycocotools or faster_coco_eval")
    if importlib.util.find_spec(backend) is None:
        raise UserError(f"module.map_backend={backend}: mAP needs {backend}: pip install 'lmforge[vision]'")
    return backend


def xywh(corners: list[float]) -> list[float]:
    """[x0, y0, x1, y1] as COCO's [x, y, width, height] (one formula for the metric and detections.json)."""
    x0, y0, x1, y1 = corners
    return [x0, y0, x1 - x0, y1 - y0]


def coco_classes(backend: str) -> tuple[Any, Any]:
    """(COCO, COCOeval) of the backend."""
    if backend == "faster_coco_eval":
        from faster_coco_eval import COCO, COCOeval_faster

        return COCO, COCOeval_faster
    from lmforge.extras import require

    return (require("pycocotools.coco", "vision", "COCO mAP").COCO,
            require("pycocotools.cocoeval", "vision", "COCO mAP").COCOeval)


class CocoMeanAveragePrecision(Metric):
    """`update(preds, target)`: per image, preds `{"boxes": [N, 4] xyxy, "scores": [N], "labels": [N]}` and
    target `{"boxes": [M, 4] xywh, "labels": [M], "area": [M], "iscrowd": [M]}` (COCO's own ground-truth
    form, so nothing is converted); `compute()`: `STATS` as 0-dim tensors (-1 where COCO has no value)."""

    full_state_update = False

    def __init__(self, backend: str = "auto", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.backend = coco_backend(backend)
        for name in ("pred_boxes", "pred_scores", "pred_labels", "true_boxes", "true_labels", "true_area",
                     "true_crowd"):
            self.add_state(name, default=[], dist_reduce_fx=None)

    def update(self, preds: list[dict[str, torch.Tensor]], target: list[dict[str, torch.Tensor]]) -> None:
        for p, t in zip(preds, target):
            self.pred_boxes.append(p["boxes"].detach().reshape(-1, 4))
            self.pred_scores.append(p["scores"].detach().reshape(-1))
            self.pred_labels.append(p["labels"].detach().reshape(-1))
            self.true_boxes.append(t["boxes"].detach().reshape(-1, 4).double())
            self.true_labels.append(t["labels"].detach().reshape(-1))
            self.true_area.append(t["area"].detach().reshape(-1).double())
            self.true_crowd.append(t["iscrowd"].detach().reshape(-1))

    def compute(self) -> dict[str, torch.Tensor]:
        COCO, COCOeval = coco_classes(self.backend)
        truth, found, categories = [], [], set()
        for image, (boxes, labels, area, crowd) in enumerate(zip(self.true_boxes, self.true_labels, self.true_area,
                                                                 self.true_crowd)):
            for box, label, a, c in zip(boxes.tolist(), labels.tolist(), area.tolist(), crowd.tolist()):
                truth.append({"id": len(truth) + 1, "image_id": image, "category_id": label, "bbox": box,
                              "area": a, "iscrowd": c})
                categories.add(label)
        for image, (boxes, scores, labels) in enumerate(zip(self.pred_boxes, self.pred_scores, self.pred_labels)):
            for box, score, label in zip(boxes.tolist(), scores.tolist(), labels.tolist()):
                found.append({"image_id": image, "category_id": label, "bbox": xywh(box), "score": score})
                categories.add(label)
        if not truth or not found:
            return {name: torch.tensor(-1.0) for name in STATS}
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints as it goes
            gt = COCO()
            gt.dataset = {"images": [{"id": i} for i in range(len(self.true_boxes))], "annotations": truth,
                          "categories": [{"id": c} for c in sorted(categories)]}
            gt.createIndex()
            evaluation = COCOeval(gt, gt.loadRes(found), iouType="bbox")
            evaluation.evaluate()
            evaluation.accumulate()
            evaluation.summarize()
        return {name: torch.tensor(float(value)) for name, value in zip(STATS, evaluation.stats)}
