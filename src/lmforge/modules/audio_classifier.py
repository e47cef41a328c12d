"""Audio classification: cross-entropy, accuracy and macro F1 on val/test, per-class test metrics and the
confusion matrix, and `predictions.csv` (path, label, prediction, probability) at the end of a run."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any, Callable, Literal, Optional

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

from lmforge.atomic import write_text
from lmforge.data.contract import FromData
from lmforge.errors import UserError
from lmforge.models.contract import config_size
from lmforge.modules.base import TaskModule
from lmforge.modules.class_metrics import ClassReport, PerClassMetrics


def in_loader_order(module: TaskModule, local: torch.Tensor) -> torch.Tensor:
    """Rows a test gathered on each rank, back in loader order (a DistributedSampler deals rank r the items
    r, r+W, r+2W, ...; its padding repeats at the end and is trimmed by the caller)."""
    if module.trainer.world_size <= 1:
        return local
    gathered = module.all_gather(local.to(module.device)).cpu()  # [W, n, ...]
    return gathered.transpose(0, 1).reshape(-1, *local.shape[1:])


class AudioClassifierModule(TaskModule):
    """Trains a classifier on batches `{"input_values", "attention_mask", "labels": [B]}`."""

    def __init__(self, model: nn.Module, optimizer: Optional[Callable] = None,
                 scheduler: Optional[Callable] = None, num_labels: FromData[Optional[int]] = None,
                 nan_policy: Literal["stop", "skip"] = "stop"):
        super().__init__(model, optimizer, scheduler, nan_policy)
        num_labels = num_labels or config_size(model, "num_labels") or None
        if num_labels is None or num_labels < 2:
            raise UserError(f"module.num_labels must be an integer >= 2 (it follows the data), got {num_labels!r}")
        self.num_labels = num_labels
        for stage in ("train", "val", "test"):
            setattr(self, f"{stage}_acc", MulticlassAccuracy(num_labels, average="micro"))
        self.val_f1 = MulticlassF1Score(num_labels, average="macro")
        self.test_f1 = MulticlassF1Score(num_labels, average="macro")
        self.test_classes = PerClassMetrics(num_labels)
        self.class_report: Optional[ClassReport] = None  # of the last test
        self.test_probs: Optional[torch.Tensor] = None  # [N, num_labels] after a test, in loader order
        self._probs: list[torch.Tensor] = []

    def forward(self, input_values: torch.Tensor, attention_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Logits [B, num_labels]."""
        return self.model(input_values=input_values, attention_mask=attention_mask).logits

    def _step(self, batch: dict[str, torch.Tensor], stage: str) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self(batch["input_values"], batch["attention_mask"]).float()
        labels = batch["labels"]
        loss = F.cross_entropy(logits, labels)
        on_step = stage == "train"
        self.log(f"{stage}/loss", loss, on_step=on_step, on_epoch=not on_step, prog_bar=True,
                 batch_size=len(labels), sync_dist=not on_step)
        acc = getattr(self, f"{stage}_acc")  # getattr: this module's own metric of the stage
        acc(logits, labels)
        self.log(f"{stage}/acc", acc, on_step=False, on_epoch=True, prog_bar=True)
        if stage != "train":
            f1 = getattr(self, f"{stage}_f1")  # getattr: this module's own metric of the stage
            f1(logits, labels)
            self.log(f"{stage}/f1", f1, on_step=False, on_epoch=True)
        return loss, logits

    def training_loss(self, batch):
        return self._step(batch, "train")[0]

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val")

    def on_test_epoch_start(self) -> None:
        self._probs = []

    def test_step(self, batch, batch_idx):
        _, logits = self._step(batch, "test")
        self.test_classes.update(logits, batch["labels"])
        self._probs.append(logits.softmax(-1).detach().cpu())

    def on_test_epoch_end(self) -> None:
        local = torch.cat(self._probs) if self._probs else torch.zeros(0, self.num_labels)
        self._probs = []
        self.test_probs = in_loader_order(self, local)
        self.class_report = self.test_classes.finish(self.trainer)

    def test_metrics(self) -> dict[str, float]:
        return self.class_report.metrics() if self.class_report else {}

    def predict_step(self, batch, batch_idx):
        return self(batch["input_values"], batch["attention_mask"]).softmax(-1)

    def on_run_end(self, run_dir: Path, datamodule: Any) -> Optional[Path]:
        """`predictions.csv` (path, label, prediction, probability of the prediction) of the test clips
        (the first ones when the test was limited) and `confusion_matrix.json`."""
        if self.test_probs is None:
            return None
        if self.class_report is not None:
            self.class_report.write(run_dir)
        paths, gold, names = datamodule.test_paths(), datamodule.test_references(), datamodule.labels
        probs = self.test_probs[: len(paths)]
        best, predicted = probs.max(-1)
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["path", "label", "prediction", "probability"])
        for path, label, p, i in zip(paths, gold, best.tolist(), predicted.tolist()):
            writer.writerow([path, label, names[i], f"{p:.6f}"])
        return write_text(Path(run_dir) / "predictions.csv", out.getvalue())
