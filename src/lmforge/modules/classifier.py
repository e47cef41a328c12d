"""Classification of fixed-size inputs (the MLP example): softmax outputs, loss, accuracy; per-class
test metrics and `confusion_matrix.json`."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Literal, Optional

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from lmforge.data.contract import FromData
from lmforge.modules.base import TaskModule
from lmforge.modules.class_metrics import ClassReport, PerClassMetrics


class ClassifierModule(TaskModule):
    """`loss=cross_entropy` (log-softmax + NLL) or `loss=mse` (softmax vs one-hot, squared error)."""

    def __init__(self, model: nn.Module, optimizer: Optional[Callable] = None,
                 scheduler: Optional[Callable] = None,
                 loss: Literal["cross_entropy", "mse"] = "cross_entropy", num_classes: FromData[Optional[int]] = None,
                 nan_policy: Literal["stop", "skip"] = "stop"):
        super().__init__(model, optimizer, scheduler, nan_policy)
        self.loss_name = loss
        self.num_classes = num_classes
        self.train_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_classes = PerClassMetrics(num_classes)
        self.class_report: Optional[ClassReport] = None  # of the last test

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.loss_name == "mse":
            return F.mse_loss(logits.softmax(-1), F.one_hot(target, self.num_classes).float())
        return F.cross_entropy(logits, target)

    def _step(self, batch, stage: str) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        loss = self.loss(logits, y)
        acc = getattr(self, f"{stage}_acc")  # getattr: this module's own metric of the stage
        acc(logits, y)
        on_step = stage == "train"
        # An epoch's loss is the mean over all ranks' batches (accuracy syncs itself: a torchmetrics metric).
        self.log(f"{stage}/loss", loss, on_step=on_step, on_epoch=not on_step, prog_bar=True, sync_dist=not on_step)
        self.log(f"{stage}/acc", acc, on_step=False, on_epoch=True, prog_bar=True)
        if stage == "test":
            self.test_classes.update(logits, y)
        return loss

    def training_loss(self, batch):
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val")

    def test_step(self, batch, batch_idx):
        self._step(batch, "test")

    def on_test_epoch_end(self) -> None:
        self.class_report = self.test_classes.finish(self.trainer)

    def test_metrics(self) -> dict[str, float]:
        return self.class_report.metrics() if self.class_report else {}

    def on_run_end(self, run_dir: Path, datamodule: Any) -> Optional[Path]:
        """Write `confusion_matrix.json` of the last test; returns its path (None when no test ran)."""
        return self.class_report.write(run_dir) if self.class_report else None

    def predict_step(self, batch, batch_idx):
        return self(batch[0]).softmax(-1)
