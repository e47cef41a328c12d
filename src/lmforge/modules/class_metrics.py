"""Per-class test metrics of a classifier: precision, recall and F1 of each class and the confusion
matrix (torchmetrics, synced across ranks), printed as a table, kept for metrics.json
(`test/precision/<class>`, `test/recall/<class>`, `test/f1/<class>`) and written to
`confusion_matrix.json` (rows: true class, columns: predicted class)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn
from torchmetrics.classification import (
    MulticlassConfusionMatrix,
    MulticlassF1Score,
    MulticlassPrecision,
    MulticlassRecall,
)

from lmforge.atomic import write_json
from lmforge.data.base import DataModule
from lmforge.metrics import PER_CLASS_SCORES, per_class_key
from lmforge.runs.directory import CONFUSION_MATRIX


def class_names(datamodule: Any, num_classes: int) -> list[str]:
    """The data's class names in index order (label names, digits '0'-'9'), else the indices."""
    names = datamodule.class_names if isinstance(datamodule, DataModule) else None
    return list(names) if names and len(names) == num_classes else [str(i) for i in range(num_classes)]


@dataclass
class ClassReport:
    """What one test measured per class: names in index order, [C] scores, the [C, C] counts."""

    names: list[str]
    precision: list[float]
    recall: list[float]
    f1: list[float]
    counts: list[list[int]]  # counts[true][predicted]

    def metrics(self, stage: str = "test") -> dict[str, float]:
        out = {}
        for score in PER_CLASS_SCORES:
            for name, value in zip(self.names, getattr(self, score)):  # getattr: one of the score lists
                out[per_class_key(stage, score, name)] = value
        return out

    def table(self) -> str:
        """A compact text table: one row per class, with its support (test items of that class)."""
        width = max(5, *(len(n) for n in self.names))
        lines = [f"{'class':<{width}}  precision  recall     f1  support"]
        for i, name in enumerate(self.names):
            lines.append(f"{name:<{width}}  {self.precision[i]:9.3f}  {self.recall[i]:6.3f}  {self.f1[i]:5.3f}"
                         f"  {sum(self.counts[i]):7d}")
        return "\n".join(lines)

    def write(self, run_dir: Path) -> Path:
        return write_json(Path(run_dir) / CONFUSION_MATRIX,
                          {"labels": self.names, "counts": self.counts, "rows": "true", "columns": "predicted"})


class PerClassMetrics(nn.Module):
    """Accumulates one test's logits and targets; `report(names)` computes (every rank must call it)."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.num_classes = num_classes
        self.precision = MulticlassPrecision(num_classes, average=None)
        self.recall = MulticlassRecall(num_classes, average=None)
        self.f1 = MulticlassF1Score(num_classes, average=None)
        self.confusion = MulticlassConfusionMatrix(num_classes)

    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        for metric in (self.precision, self.recall, self.f1, self.confusion):
            metric.update(logits, target)

    def finish(self, trainer: Any) -> Optional[ClassReport]:
        """At the end of a test: the report, with the class names of the trainer's data, printed by rank 0."""
        report = self.report(class_names(trainer.datamodule, self.num_classes))
        if report is not None and trainer.is_global_zero:
            print(f"per-class test metrics:\n{report.table()}", flush=True)
        return report

    def report(self, names: list[str]) -> Optional[ClassReport]:
        """The scores of what was updated since the last report (None when nothing was), then reset."""
        if not self.confusion.update_called:
            return None
        report = ClassReport(names, self.precision.compute().tolist(), self.recall.compute().tolist(),
                             self.f1.compute().tolist(), self.confusion.compute().long().tolist())
        with torch.inference_mode(False):  # fresh states, updatable by a later test outside inference mode
            for metric in (self.precision, self.recall, self.f1, self.confusion):
                metric.reset()
        return report
