"""Text classification: cross-entropy, accuracy and macro F1, a separate head learning rate, per-class
test metrics, and the test predictions and confusion matrix written at the end of a run
(`predictions.csv`, `confusion_matrix.json`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Literal, Optional

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

from lmforge.data.contract import FromData
from lmforge.errors import UserError
from lmforge.finetune.methods import is_head
from lmforge.models.contract import config_size
from lmforge.modules.base import TaskModule
from lmforge.modules.class_metrics import ClassReport, PerClassMetrics
from lmforge.modules.predictions import in_loader_order, write_predictions
from lmforge.optim.contract import default_weight_decay


class SequenceClassifierModule(TaskModule):
    """Trains a classifier on batches `{"input_ids", "attention_mask", "labels": [B]}`.

    `head_lr` gives the (new, randomly initialised) head its own learning rate, usually higher
    than the pretrained body's. Test probabilities are kept in loader order for `on_run_end`.
    """

    def __init__(self, model: nn.Module, optimizer: Optional[Callable] = None,
                 scheduler: Optional[Callable] = None, num_labels: FromData[Optional[int]] = None,
                 head_lr: Optional[float] = None, nan_policy: Literal["stop", "skip"] = "stop"):
        super().__init__(model, optimizer, scheduler, nan_policy)
        if num_labels is None:
            num_labels = config_size(model, "num_labels") or None
        if num_labels is None or num_labels < 2:
            raise UserError(f"module.num_labels must be an integer >= 2 (it follows the data), got {num_labels!r}")
        if head_lr is not None and head_lr <= 0:
            raise UserError(f"module.head_lr must be positive, got {head_lr}")
        self.num_labels = num_labels
        self.head_lr = head_lr
        for stage in ("train", "val", "test"):
            setattr(self, f"{stage}_acc", MulticlassAccuracy(num_labels, average="micro"))
        self.val_f1 = MulticlassF1Score(num_labels, average="macro")
        self.test_f1 = MulticlassF1Score(num_labels, average="macro")
        self.test_classes = PerClassMetrics(num_labels)
        self.class_report: Optional[ClassReport] = None  # of the last test
        self.test_probs: Optional[torch.Tensor] = None  # [N, num_labels] after a test, in loader order
        self._probs: list[torch.Tensor] = []

    def forward(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Logits [B, num_labels]."""
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits

    #: predictions.csv's columns: what names the example, its label, the prediction and its probability
    prediction_columns = ("text", "label", "predicted", "probability")

    def logits(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Logits [B, num_labels] of a batch."""
        return self(batch["input_ids"], batch.get("attention_mask"))

    def test_examples(self, datamodule: Any) -> tuple[list, list]:
        """What predictions.csv names each test example by (its text), and its label."""
        return datamodule.test_texts, datamodule.test_labels

    def _step(self, batch: dict[str, torch.Tensor], stage: str) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.logits(batch).float()
        labels = batch["labels"]
        loss = F.cross_entropy(logits, labels)
        on_step = stage == "train"
        self.log(f"{stage}/loss", loss, on_step=on_step, on_epoch=not on_step, prog_bar=True,
                 batch_size=len(labels), sync_dist=not on_step)
        acc = getattr(self, f"{stage}_acc")  # getattr: this module's own metric of the stage
        acc(logits, labels)
        self.log(f"{stage}/acc", acc, on_step=False, on_epoch=True, prog_bar=True)
        if stage != "train":  # macro F1 over the whole epoch
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
        return self.logits(batch).softmax(-1)

    def on_run_end(self, run_dir: Path, datamodule: Any) -> Optional[Path]:
        """Write `predictions.csv` (`prediction_columns`) for the test split, or its first rows when the test
        was limited (limit_test_batches, debug=fdr), and `confusion_matrix.json`; returns the predictions'
        path (None when no test ran)."""
        if self.test_probs is None:
            return None
        if self.class_report is not None:
            self.class_report.write(run_dir)
        examples, gold = self.test_examples(datamodule)
        return write_predictions(run_dir, self.prediction_columns, examples, gold, datamodule.labels,
                                 self.test_probs)

    def parameter_groups(self) -> list[dict[str, Any]]:
        """Head and body parameters, each split into decayed matrices and undecayed biases/norms (1-D);
        the head groups get `lr=head_lr` when it is set, the others the optimizer's lr."""
        weight_decay = default_weight_decay(self.optimizer_factory)
        groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {}
        for name, param in self.model.named_parameters():
            if param.requires_grad:
                groups.setdefault((is_head(name), self.is_matrix(param)), []).append(param)
        out = []
        for (head, decay), params in sorted(groups.items()):
            group: dict[str, Any] = {"params": params, "weight_decay": weight_decay if decay else 0.0}
            if head and self.head_lr is not None:
                group["lr"] = self.head_lr
            out.append(group)
        return out
