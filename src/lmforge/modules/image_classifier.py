"""Image classification: cross-entropy (label smoothing; mixup and cutmix as options), top-1 and top-5
accuracy, macro F1, per-class test metrics, and the test predictions and confusion matrix written at
the end of a run or an `lmforge eval` (`predictions.csv`: path, label, prediction, probability); a few
validation images with their label and prediction in W&B and TensorBoard."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Callable, Literal, Optional

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

from lmforge.data.base import DataModule
from lmforge.data.contract import FromData
from lmforge.errors import UserError
from lmforge.loggers.examples import log_images, should_show
from lmforge.models.contract import config_size
from lmforge.modules.base import TaskModule
from lmforge.modules.class_metrics import ClassReport, PerClassMetrics
from lmforge.modules.predictions import in_loader_order, write_predictions
from lmforge.optim.contract import default_weight_decay

Alpha = Annotated[float, Field(ge=0)]
SHOWN_IMAGES = 8  # validation images logged (W&B, TensorBoard) with their label and prediction


class ImageClassifierModule(TaskModule):
    """Trains a classifier on batches `{"pixel_values": [B, 3, H, W], "labels": [B]}`.

    `mixup_alpha` / `cutmix_alpha` above 0 mix each training batch with a shuffled copy of itself (the
    whole images blended, or a box pasted), with a share drawn from Beta(alpha, alpha); with both set,
    each batch takes one of the two at random. The draws come from the step's seeded generator."""

    def __init__(self, model: nn.Module, optimizer: Optional[Callable] = None, scheduler: Optional[Callable] = None,
                 num_classes: FromData[Optional[int]] = None,
                 label_smoothing: Annotated[float, Field(ge=0, lt=1)] = 0.0, mixup_alpha: Alpha = 0.0,
                 cutmix_alpha: Alpha = 0.0, nan_policy: Literal["stop", "skip"] = "stop"):
        super().__init__(model, optimizer, scheduler, nan_policy)
        num_classes = num_classes or config_size(model, "num_labels") or None
        if num_classes is None or num_classes < 2:
            raise UserError(f"module.num_classes must be an integer >= 2 (it follows the data), got {num_classes!r}")
        self.num_classes, self.label_smoothing = num_classes, label_smoothing
        self.mixup_alpha, self.cutmix_alpha = mixup_alpha, cutmix_alpha
        for stage in ("train", "val", "test"):
            setattr(self, f"{stage}_acc", MulticlassAccuracy(num_classes, average="micro"))
        for stage in ("val", "test"):
            setattr(self, f"{stage}_top5", MulticlassAccuracy(num_classes, top_k=min(5, num_classes), average="micro"))
            setattr(self, f"{stage}_f1", MulticlassF1Score(num_classes, average="macro"))
        self.test_classes = PerClassMetrics(num_classes)
        self.class_report: Optional[ClassReport] = None  # of the last test
        self.test_probs: Optional[torch.Tensor] = None  # [N, num_classes] after a test, in loader order
        self._probs: list[torch.Tensor] = []

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Logits [B, num_classes]."""
        return self.model(pixel_values=pixel_values).logits

    def mixed(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
        """(images, labels, the partner labels, the share of the first) of a mixup or cutmix of the batch."""
        alphas = [a for a in (self.mixup_alpha, self.cutmix_alpha) if a > 0]
        use_cutmix = self.cutmix_alpha > 0 and (len(alphas) == 1 or torch.rand(()) < 0.5)
        alpha = self.cutmix_alpha if use_cutmix else self.mixup_alpha
        share = float(torch.distributions.Beta(alpha, alpha).sample())
        order = torch.randperm(len(labels), device=labels.device)
        if not use_cutmix:
            return share * images + (1 - share) * images[order], labels, labels[order], share
        height, width = images.shape[-2:]
        cut_h, cut_w = int(height * (1 - share) ** 0.5), int(width * (1 - share) ** 0.5)
        cy, cx = int(torch.randint(height, ())), int(torch.randint(width, ()))
        top, bottom = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, height)
        left, right = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, width)
        images = images.clone()
        images[..., top:bottom, left:right] = images[order][..., top:bottom, left:right]
        return images, labels, labels[order], 1 - (bottom - top) * (right - left) / (height * width)

    def training_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        images, labels = batch["pixel_values"], batch["labels"]
        if self.mixup_alpha > 0 or self.cutmix_alpha > 0:
            images, labels, partner, share = self.mixed(images, labels)
            logits = self(images).float()
            loss = share * self.cross_entropy(logits, labels) + (1 - share) * self.cross_entropy(logits, partner)
        else:
            logits = self(images).float()
            loss = self.cross_entropy(logits, labels)
        self.log("train/loss", loss, on_step=True, on_epoch=False, prog_bar=True, batch_size=len(labels))
        self.train_acc(logits, labels)
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True, prog_bar=True)
        return loss

    def cross_entropy(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)

    def _evaluate(self, batch: dict[str, torch.Tensor], stage: str) -> torch.Tensor:
        logits, labels = self(batch["pixel_values"]).float(), batch["labels"]
        self.log(f"{stage}/loss", self.cross_entropy(logits, labels), on_step=False, on_epoch=True, prog_bar=True,
                 batch_size=len(labels), sync_dist=True)
        for name in ("acc", "top5", "f1"):
            metric = getattr(self, f"{stage}_{name}")  # getattr: this module's own metric of the stage
            metric(logits, labels)
            self.log(f"{stage}/{name}", metric, on_step=False, on_epoch=True, prog_bar=name == "acc")
        return logits

    def validation_step(self, batch, batch_idx):
        logits = self._evaluate(batch, "val")
        if should_show(self.trainer, batch_idx):
            names = self.class_names()
            shown = zip(batch["labels"][:SHOWN_IMAGES].tolist(), logits[:SHOWN_IMAGES].argmax(-1).tolist())
            log_images(self.trainer, "val/examples", batch["pixel_values"][:SHOWN_IMAGES],
                       [f"{names[label]} -> {names[predicted]}" for label, predicted in shown])

    def class_names(self) -> list[str]:
        """The data's class names in index order (the indices as text where the data has none)."""
        datamodule = self.trainer.datamodule
        names = datamodule.class_names if isinstance(datamodule, DataModule) else None
        return names or [str(i) for i in range(self.num_classes)]

    def on_test_epoch_start(self) -> None:
        self._probs = []

    def test_step(self, batch, batch_idx):
        logits = self._evaluate(batch, "test")
        self.test_classes.update(logits, batch["labels"])
        self._probs.append(logits.softmax(-1).detach().cpu())

    def on_test_epoch_end(self) -> None:
        """Gather the probabilities of all ranks back into loader order (rank r held items r, r+W, ...)."""
        local = torch.cat(self._probs) if self._probs else torch.zeros(0, self.num_classes)
        self._probs = []
        self.test_probs = in_loader_order(self, local)
        self.class_report = self.test_classes.finish(self.trainer)

    def test_metrics(self) -> dict[str, float]:
        return self.class_report.metrics() if self.class_report else {}

    def predict_step(self, batch, batch_idx):
        return self(batch["pixel_values"]).softmax(-1)

    def on_run_end(self, run_dir: Path, datamodule: Any) -> Optional[Path]:
        """Write `predictions.csv` (path, label, prediction, its probability) of the test split (its first
        rows when the test was limited) and `confusion_matrix.json`; returns the predictions' path."""
        if self.test_probs is None:
            return None
        if self.class_report is not None:
            self.class_report.write(run_dir)
        return write_predictions(run_dir, ("path", "label", "prediction", "probability"), datamodule.test_paths,
                                 datamodule.test_labels, datamodule.labels, self.test_probs)

    def parameter_groups(self) -> list[dict[str, Any]]:
        """Weight matrices and convolution kernels decay; biases and norms (1-D) do not."""
        params = [p for p in self.model.parameters() if p.requires_grad]
        groups = [{"params": [p for p in params if self.is_matrix(p)],
                   "weight_decay": default_weight_decay(self.optimizer_factory)},
                  {"params": [p for p in params if not self.is_matrix(p)], "weight_decay": 0.0}]
        return [group for group in groups if group["params"]]
