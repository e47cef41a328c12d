"""Sequence classifiers on a pretrained Hugging Face model directory (causal LM or encoder).

`pooling="auto"` is HF's own `AutoModelForSequenceClassification` (last non-pad token for causal
LMs, [CLS] for encoders): it exports and reloads as a plain HF model. `pooling="mean"` averages the
last hidden states over the attention mask; it trains the same way but cannot be exported.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal, Optional

import torch
from torch import nn

from lmforge.data.contract import FromData
from lmforge.errors import UserError

POOLINGS = ("auto", "mean")


class MeanPoolClassifier(nn.Module):
    """A backbone (`AutoModel`), dropout and a linear `head` on the mask-averaged last hidden states.

    Returns an object with `.logits` like HF classifiers. `not_exportable` says why `export` must
    refuse it: it is no `transformers` class, so it would not reload with `from_pretrained`.
    """

    not_exportable = ("model.pooling=mean builds a custom classifier that cannot be exported as a Hugging Face "
                      "model; train with model.pooling=auto to export")

    def __init__(self, backbone: nn.Module, num_labels: int, dropout: float = 0.1):
        super().__init__()
        self.backbone = backbone
        self.config = backbone.config
        self.num_labels = num_labels
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(backbone.config.hidden_size, num_labels)

    def forward(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
                **kwargs: Any) -> Any:
        from transformers.modeling_outputs import SequenceClassifierOutput

        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        kwargs.pop("labels", None)  # the loss belongs to the LightningModule
        kwargs.pop("use_cache", None)
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask, **kwargs).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return SequenceClassifierOutput(logits=self.head(self.dropout(pooled)))


def _pad_token_id(path: str, config: Any) -> Optional[int]:
    """The id the data pads with (`lmforge.tokenizers.contract.pad_id`), else the config's eos."""
    from lmforge.tokenizers.contract import pad_id
    from lmforge.tokenizers.specs import load_tokenizer

    try:
        value = pad_id(load_tokenizer(path))
    except UserError:  # no tokenizer beside the model: the config's eos is all there is
        value = None
    if value is None:
        value = config.eos_token_id  # a PretrainedConfig key: an id, a list of ids, or None
        if isinstance(value, (list, tuple)):
            value = value[0] if value else None
    return None if value is None else int(value)


def _check(path: Optional[str], num_labels: Optional[int], pooling: str, dropout: Optional[float]) -> str:
    """Validate the arguments, naming the config key at fault; returns `path` as a string."""
    if path is None:
        raise UserError("model.path is not set: give a Hugging Face model directory (or a hub name when online)")
    if num_labels is None:
        raise UserError("model.num_labels is not set: it follows the data's label set (data=classification), "
                        "or set model.num_labels=N")
    if isinstance(num_labels, bool) or not isinstance(num_labels, int) or num_labels < 2:
        raise UserError(f"model.num_labels must be an integer >= 2, got {num_labels!r}")
    if pooling not in POOLINGS:
        raise UserError(f"model.pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")
    if dropout is not None and not 0.0 <= dropout < 1.0:
        raise UserError(f"model.dropout must be in [0, 1), got {dropout}")
    path = os.fspath(path)
    local = os.path.isabs(path) or path.startswith((".", "~"))
    if local and not Path(path).expanduser().is_dir():
        raise UserError(f"model.path: {path} is not a directory")
    return str(Path(path).expanduser()) if local else path


def sequence_classifier(path: Optional[str] = None, num_labels: FromData[Optional[int]] = None,
                        pooling: Literal["auto", "mean"] = "auto", dropout: Optional[float] = None,
                        labels: FromData[Optional[list[str]]] = None) -> nn.Module:
    """A classifier with `num_labels` outputs on the pretrained model at `path` (new, random head).

    `dropout` sets the head's dropout: for `auto` only on models with a `classifier_dropout` setting
    (BERT-like); for `mean` it defaults to 0.1. `labels` (names, from the data) go into the HF
    config's id2label, so an exported classifier reports them.
    """
    path = _check(path, num_labels, pooling, dropout)
    from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification

    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=False)
    except (OSError, ValueError, KeyError) as e:
        raise UserError(f"model.path: cannot load a model config from {path!r}: {str(e).splitlines()[0]}") from e
    try:
        if pooling == "mean":
            backbone = AutoModel.from_pretrained(path, trust_remote_code=False)
            return MeanPoolClassifier(backbone, num_labels, 0.1 if dropout is None else dropout)
        kwargs: dict[str, Any] = {"num_labels": num_labels}
        if labels:
            kwargs["id2label"] = {i: str(name) for i, name in enumerate(labels)}
            kwargs["label2id"] = {str(name): i for i, name in enumerate(labels)}
        if config.pad_token_id is None:
            # Causal LMs pool on the last non-pad token, so they must know what the data pads with.
            kwargs["pad_token_id"] = _pad_token_id(path, config)
        if dropout is not None:
            if not hasattr(config, "classifier_dropout"):  # hasattr: an optional key of HF configs
                raise UserError(f"model.dropout: {type(config).__name__} has no classifier dropout setting; "
                                "use model.pooling=mean for a dropout before the head")
            kwargs["classifier_dropout"] = dropout
        return AutoModelForSequenceClassification.from_pretrained(path, trust_remote_code=False, **kwargs)
    except (OSError, ValueError, KeyError) as e:
        raise UserError(f"model.path: cannot load a sequence classifier from {path!r}: "
                        f"{str(e).splitlines()[0]}") from e
