"""A classifier's test predictions: every test example's class probabilities, gathered from all ranks in
loader order, and `predictions.csv` written from them."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Sequence

import lightning as L
import torch

from lmforge.atomic import write_text


def in_loader_order(module: L.LightningModule, local: torch.Tensor) -> torch.Tensor:
    """Rows a test kept on each rank, back in loader order (a DistributedSampler deals rank r the items
    r, r+W, r+2W, ...; its padding repeats at the end and is trimmed by `write_predictions`)."""
    if module.trainer.world_size <= 1:
        return local
    gathered = module.all_gather(local.to(module.device)).cpu()  # [W, n, ...]
    return gathered.transpose(0, 1).reshape(-1, *local.shape[1:])


def write_predictions(run_dir: str | Path, columns: Sequence[str], examples: Sequence, gold: Sequence,
                      names: Sequence[str], probs: torch.Tensor) -> Path:
    """`predictions.csv`: per test example (`examples`: its text or path; `gold`: its label) the predicted
    class name and its probability; rows beyond the examples (a sampler's padding) are dropped, and a
    limited test writes its first examples only."""
    best, predicted = probs[: len(examples)].max(-1)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for example, label, p, i in zip(examples, gold, best.tolist(), predicted.tolist()):
        writer.writerow([example, label, names[i], f"{p:.6f}"])
    return write_text(Path(run_dir) / "predictions.csv", out.getvalue())
