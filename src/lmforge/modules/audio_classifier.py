"""Audio classification: the text classifier's loss and metrics (cross-entropy, accuracy and macro F1,
per-class test metrics, the confusion matrix) on raw audio, with `predictions.csv` naming each clip."""

from __future__ import annotations

from typing import Any, Callable, Literal, Optional

import torch
from torch import nn

from lmforge.data.contract import FromData
from lmforge.modules.sequence_classifier import SequenceClassifierModule


class AudioClassifierModule(SequenceClassifierModule):
    """Trains a classifier on batches `{"input_values", "attention_mask", "labels": [B]}`."""

    prediction_columns = ("path", "label", "prediction", "probability")

    def __init__(self, model: nn.Module, optimizer: Optional[Callable] = None,
                 scheduler: Optional[Callable] = None, num_labels: FromData[Optional[int]] = None,
                 nan_policy: Literal["stop", "skip"] = "stop"):
        super().__init__(model, optimizer, scheduler, num_labels=num_labels, nan_policy=nan_policy)

    def forward(self, input_values: torch.Tensor, attention_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Logits [B, num_labels]."""
        return self.model(input_values=input_values, attention_mask=attention_mask).logits

    def logits(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self(batch["input_values"], batch["attention_mask"])

    def test_examples(self, datamodule: Any) -> tuple[list, list]:
        """Each test clip's path and label."""
        return datamodule.test_paths(), datamodule.test_references()
