"""Object detection with a DETR-style model: the model's own set-prediction loss (Hungarian matching,
class + L1 + GIoU), mAP, mAP@50 and mAP@75 (COCO's evaluation, in the original images' pixels, as a
torchmetrics metric: modules/coco_map.py), and the test detections written as COCO results JSON
(`detections.json`: image_id, original category_id, bbox [x, y, width, height] in the original
image's pixels, score) at the end of a run or of `lmforge eval`."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Literal, Optional

import torch
from torch import nn

from lmforge.atomic import write_text
from lmforge.errors import UserError
from lmforge.models.detr import detections
from lmforge.modules.base import TaskModule
from lmforge.modules.coco_map import STATS, CocoMeanAveragePrecision, xywh

DETECTIONS = "detections.json"


class DetectorModule(TaskModule):
    """Trains a DETR-style model on batches `{"pixel_values", "labels": [per-image target dicts]}`
    (lmforge.data.coco). `map_backend`: auto | pycocotools | faster_coco_eval."""

    def __init__(self, model: nn.Module, optimizer: Optional[Callable] = None,
                 scheduler: Optional[Callable] = None, map_backend: Literal["auto", "pycocotools", "faster_coco_eval"] = "auto",
                 backbone_lr: Optional[float] = None, nan_policy: Literal["stop", "skip"] = "stop"):
        super().__init__(model, optimizer, scheduler, nan_policy)
        if backbone_lr is not None and backbone_lr <= 0:
            raise UserError(f"module.backbone_lr must be positive, got {backbone_lr}")
        self.backbone_lr = backbone_lr
        self.val_map = CocoMeanAveragePrecision(map_backend)
        self.test_map = CocoMeanAveragePrecision(map_backend)
        self.test_detections: Optional[list[dict[str, Any]]] = None  # COCO results of the last test
        self._found: list[dict[str, Any]] = []

    def forward(self, pixel_values: torch.Tensor, labels: Optional[list[dict]] = None) -> Any:
        return self.model(pixel_values=pixel_values, labels=labels)

    def _step(self, batch: dict[str, Any], stage: str) -> tuple[torch.Tensor, Any]:
        targets = [{"class_labels": t["class_labels"], "boxes": t["boxes"]} for t in batch["labels"]]
        out = self(batch["pixel_values"], targets)
        on_step = stage == "train"
        size = len(targets)
        self.log(f"{stage}/loss", out.loss, on_step=on_step, on_epoch=not on_step, prog_bar=True,
                 batch_size=size, sync_dist=not on_step)
        for name in ("loss_ce", "loss_bbox", "loss_giou"):
            self.log(f"{stage}/{name}", out.loss_dict[name], on_step=on_step, on_epoch=not on_step,
                     batch_size=size, sync_dist=not on_step)
        return out.loss, out

    def training_loss(self, batch):
        return self._step(batch, "train")[0]

    def _evaluate(self, batch: dict[str, Any], stage: str) -> list[dict[str, torch.Tensor]]:
        _, out = self._step(batch, stage)
        sizes = torch.stack([t["orig_size"] for t in batch["labels"]])
        found = detections(self.model, out.logits, out.pred_boxes, sizes)
        truth = [{"boxes": t["eval_boxes"], "labels": t["eval_labels"], "area": t["area"], "iscrowd": t["iscrowd"]}
                 for t in batch["labels"]]
        getattr(self, f"{stage}_map").update(found, truth)  # getattr: this module's own metric of the stage
        return found

    def _log_map(self, stage: str) -> None:
        metric = getattr(self, f"{stage}_map")  # getattr: this module's own metric of the stage
        if not metric.update_called:
            return
        values = metric.compute()
        for name in STATS:
            self.log(f"{stage}/{name}", values[name], prog_bar=name == "map")
        metric.reset()

    def validation_step(self, batch, batch_idx):
        self._evaluate(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._log_map("val")

    def on_test_epoch_start(self) -> None:
        self._found = []

    def test_step(self, batch, batch_idx):
        found = self._evaluate(batch, "test")
        for target, image in zip(batch["labels"], found):
            self._found.append({"image_id": int(target["image_id"]), **{k: v.detach().cpu() for k, v in image.items()}})

    def on_test_epoch_end(self) -> None:
        self._log_map("test")
        found, self._found = self._found, []
        if self.trainer.world_size > 1:
            import torch.distributed as dist

            gathered: list[Any] = [None] * self.trainer.world_size
            dist.all_gather_object(gathered, found)
            found = [image for part in gathered for image in part]
        self.test_detections = found

    def on_run_end(self, run_dir: Path, datamodule: Any) -> Optional[Path]:
        """Write `detections.json` (COCO results: original image and category ids, xywh boxes in the
        original image's pixels) for the test images; returns its path (None when no test ran)."""
        if self.test_detections is None:
            return None
        import json

        labels = datamodule.label_map
        results, seen = [], set()
        for image in self.test_detections:
            if image["image_id"] in seen:  # DDP pads the last batch with repeats
                continue
            seen.add(image["image_id"])
            for (x0, y0, x1, y1), score, label in zip(image["boxes"].tolist(), image["scores"].tolist(),
                                                      image["labels"].tolist()):
                results.append({"image_id": image["image_id"], "category_id": labels.category(label),
                                "bbox": xywh([x0, y0, x1, y1]), "score": score})
        return write_text(Path(run_dir) / DETECTIONS, json.dumps(results) + "\n")

    def parameter_groups(self) -> list[dict[str, Any]]:
        """Backbone and the rest, each split into decayed matrices and undecayed biases/norms (1-D); the
        backbone gets `lr=backbone_lr` when it is set (DETR's recipe: a tenth of the rest)."""
        from lmforge.optim.contract import default_weight_decay

        weight_decay = default_weight_decay(self.optimizer_factory)
        groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
        for name, param in self.model.named_parameters():
            if param.requires_grad:
                groups.setdefault((".backbone." in f".{name}", self.is_matrix(param)), []).append(param)
        out = []
        for (backbone, decay), params in sorted(groups.items()):
            group: dict[str, Any] = {"params": params, "weight_decay": weight_decay if decay else 0.0}
            if backbone and self.backbone_lr is not None:
                group["lr"] = self.backbone_lr
            out.append(group)
        return out
