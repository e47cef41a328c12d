"""Next-token prediction: cross-entropy on already-shifted labels, perplexity and bits per byte."""

from __future__ import annotations

import math
from typing import Any, Callable, Literal, Optional

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric

from lmforge.data.base import DataModule
from lmforge.errors import UserError
from lmforge.loggers.cadence import written_step
from lmforge.models.contract import output_layer, unwrap
from lmforge.models.gpt import GPT
from lmforge.modules.base import TaskModule
from lmforge.optim.contract import default_weight_decay

IGNORE_INDEX = -100


def lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the positions whose label is not -100 (labels are already shifted)."""
    return F.cross_entropy(logits.flatten(0, -2).float(), labels.flatten(), ignore_index=IGNORE_INDEX)


class CausalLMModule(TaskModule):
    """Trains a causal LM on batches `{"input_ids": [B, T], "labels": [B, T]}` with labels[t] = the
    token after input_ids[t] (-100 = ignore). The loss is computed here from the logits, so the
    labels mean what our data says whatever the model class would do with them."""

    def __init__(self, model: nn.Module, optimizer: Optional[Callable] = None,
                 scheduler: Optional[Callable] = None, weight_decay_embeddings: bool = False,
                 nan_policy: Literal["stop", "skip"] = "stop"):
        super().__init__(model, optimizer, scheduler, nan_policy)
        self.weight_decay_embeddings = weight_decay_embeddings
        # Per stage, the token-weighted mean loss of the epoch (torchmetrics syncs it across ranks).
        self.epoch_loss = nn.ModuleDict({stage: MeanMetric() for stage in ("val", "test")})
        # Per (stage, source index) of a mixture, the same: made when its first batch comes (a plain dict:
        # no part of the module's state).
        self._source_loss: dict[tuple[str, int], MeanMetric] = {}

    def forward(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
                position_ids: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Logits [B, T, vocab] for every position; with `position_ids` (data.document_mask), of packed
        documents that do not see each other (the native GPTs only)."""
        if position_ids is None:
            return self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
        if not isinstance(unwrap(self.model), GPT):
            raise UserError(f"data.document_mask=true needs a native GPT (model.impl=native), not "
                            f"{type(self.model).__name__}")
        return self.model(input_ids=input_ids, position_ids=position_ids).logits

    def batch_loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """The mean loss of a batch and the number of tokens it averages over."""
        labels = batch["labels"]
        logits = self(batch["input_ids"], position_ids=batch.get("position_ids"))
        return lm_loss(logits, labels), (labels != IGNORE_INDEX).sum()

    def training_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        loss, _ = self.batch_loss(batch)  # subclasses' batch_loss (SFT: the attention mask) decides the loss
        if written_step(self.trainer, self.trainer.global_step + 1):  # the step this batch finishes
            self.log("train/loss", loss, on_step=True, on_epoch=False, prog_bar=True)
        return loss

    def _eval_step(self, batch: dict[str, torch.Tensor], stage: str) -> None:
        if "source" in batch:  # windows of a mixture's sources: each source's loss apart too
            self._sources_step(batch, stage)
            return
        loss, tokens = self.batch_loss(batch)
        if tokens > 0:
            self.epoch_loss[stage].update(loss.detach().float(), weight=tokens)

    def _sources_step(self, batch: dict[str, torch.Tensor], stage: str) -> None:
        labels = batch["labels"]
        logits = self(batch["input_ids"], position_ids=batch.get("position_ids"))
        losses = F.cross_entropy(logits.flatten(0, -2).float(), labels.flatten(), ignore_index=IGNORE_INDEX,
                                 reduction="none").view_as(labels)
        counted = labels != IGNORE_INDEX
        for source in batch["source"].unique().tolist():
            rows = batch["source"] == source
            tokens = counted[rows].sum()
            if tokens > 0:
                loss = losses[rows].sum() / tokens
                self.epoch_loss[stage].update(loss.detach(), weight=tokens)
                self._source_metric(stage, source).update(loss.detach(), weight=tokens)

    def _source_metric(self, stage: str, source: int) -> MeanMetric:
        """The mean loss of one source in `stage` (made on first use, on this module's device)."""
        key = (stage, source)
        if key not in self._source_loss:
            self._source_loss[key] = MeanMetric().to(self.device)
        return self._source_loss[key]

    def validation_step(self, batch, batch_idx):
        self._eval_step(batch, "val")

    def test_step(self, batch, batch_idx):
        self._eval_step(batch, "test")

    def _log_epoch(self, stage: str) -> None:
        """Log `<stage>/loss` (the mean over all tokens of all ranks), `/ppl` and, when the data knows
        its bytes per token, `/bpb`."""
        metric = self.epoch_loss[stage]
        loss = metric.compute()  # every rank joins the reduction, even one that saw no tokens
        with torch.inference_mode(False):  # fresh states made under validate()'s inference mode could
            metric.reset()  # not be updated in place by the next fit's validation
        if not torch.isfinite(loss):
            return
        self.log(f"{stage}/loss", loss, prog_bar=True, sync_dist=True)
        self.log(f"{stage}/ppl", torch.exp(loss.clamp(max=80.0)), sync_dist=True)
        datamodule = self.trainer.datamodule
        bytes_per_token = datamodule.bytes_per_token(stage) if isinstance(datamodule, DataModule) else None
        if bytes_per_token:
            self.log(f"{stage}/bpb", loss / math.log(2) / bytes_per_token, sync_dist=True)
        sources = datamodule.validation_sources if isinstance(datamodule, DataModule) else {}
        for index, (name, source_bytes_per_token) in enumerate(sources.items()):
            metric = self._source_metric(stage, index)  # every rank computes each, even one that saw none of it
            source_loss = metric.compute()
            with torch.inference_mode(False):
                metric.reset()
            if torch.isfinite(source_loss):
                self.log(f"{stage}/loss/{name}", source_loss, sync_dist=True)
                self.log(f"{stage}/bpb/{name}", source_loss / math.log(2) / source_bytes_per_token, sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")

    def parameter_groups(self) -> list[dict[str, Any]]:
        """Groups by the `kind` of parameter, for optimizers that treat them differently (Muon takes
        "matrix" groups, AdamW the others; torch's optimizers ignore the key): "matrix" (2-D weights in
        the blocks), "head" (an untied output layer), "embedding" (token/position tables; a tied head
        is one) and "vector" (biases, norms). Weight decay goes to matrices and the head only, and to
        embeddings with `weight_decay_embeddings`."""
        weight_decay = default_weight_decay(self.optimizer_factory)
        embeddings = {id(m.weight) for m in self.modules() if isinstance(m, nn.Embedding)}
        head = output_layer(self.model)
        head_ids = {id(head.weight)} if head is not None else set()
        kinds: dict[str, list[nn.Parameter]] = {"matrix": [], "head": [], "embedding": [], "vector": []}
        for param in self.parameters():  # each parameter once, even when tied
            if not param.requires_grad:
                continue
            if id(param) in embeddings:
                kind = "embedding"
            elif id(param) in head_ids:
                kind = "head"
            else:
                kind = "matrix" if self.is_matrix(param) else "vector"
            kinds[kind].append(param)
        decays = {"matrix": weight_decay, "head": weight_decay, "vector": 0.0,
                  "embedding": weight_decay if self.weight_decay_embeddings else 0.0}
        return [{"params": params, "weight_decay": decays[kind], "kind": kind}
                for kind, params in kinds.items() if params]
