"""`finetune=full|lora|freeze`: decide which parameters of a pretrained model train."""

from __future__ import annotations

import logging
import re
from typing import Any

from torch import nn

from lmforge.errors import UserError

log = logging.getLogger(__name__)

# Name parts of heads across architectures: HF's `score` (GPT-2/Llama) and `classifier` (BERT), our
# `head`, the LM head, and peft's trainable `modules_to_save` copies.
HEAD_NAMES = ("score", "classifier", "head", "lm_head", "modules_to_save")
# Where the numbered transformer blocks live: transformer.h.3, model.layers.3, encoder.layer.3, ...
LAYER_INDEX = re.compile(r"\.(?:h|layers|layer)\.(\d+)\.")


def is_head(name: str) -> bool:
    """Whether the parameter `name` belongs to a head (trained by train_only_head, given head_lr)."""
    return any(part in HEAD_NAMES for part in name.split("."))


def apply_finetune(model: nn.Module, settings: dict[str, Any]) -> nn.Module:
    """Freeze what the settings say, wrap in LoRA adapters if asked; prints trainable vs total."""
    method = settings.get("method", "full")
    if method == "lora":
        model = add_lora(model, settings)
    freeze(model, settings)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    log.info("finetune=%s: %s of %s parameters train (%.2f%%)", method, f"{trainable:,}", f"{total:,}",
             100 * trainable / max(1, total))
    if trainable == 0:
        raise UserError("finetune: every parameter is frozen (check finetune.freeze_layers / train_only_head)")
    return model


def freeze(model: nn.Module, settings: dict[str, Any]) -> None:
    """Embeddings (token and position tables), the first N blocks, or everything but the head."""
    embedding_ids = {id(p) for m in model.modules() if isinstance(m, nn.Embedding) for p in m.parameters()}
    first_n = int(settings.get("freeze_layers") or 0)
    for name, param in model.named_parameters():
        layer = LAYER_INDEX.search(f".{name}")
        if settings.get("train_only_head") and not is_head(name) and "lora_" not in name:
            param.requires_grad_(False)
        elif settings.get("freeze_embeddings") and id(param) in embedding_ids and not is_head(name):
            param.requires_grad_(False)
        elif layer and int(layer.group(1)) < first_n:
            param.requires_grad_(False)


def add_lora(model: nn.Module, settings: dict[str, Any]) -> nn.Module:
    """Wrap the model with peft LoRA adapters; the head (if any) trains fully and is saved too."""
    try:
        from peft import LoraConfig, TaskType, get_peft_model
    except ImportError as exc:
        raise UserError("finetune=lora needs peft: pip install 'lmforge[finetune]'") from exc
    classifier = type(model).__name__.endswith("ForSequenceClassification")
    config = LoraConfig(
        r=int(settings.get("r", 8)), lora_alpha=float(settings.get("alpha", 16)),
        lora_dropout=float(settings.get("dropout", 0.05)), target_modules=settings.get("target_modules"),
        task_type=TaskType.SEQ_CLS if classifier else TaskType.CAUSAL_LM,
    )
    try:
        return get_peft_model(model, config)
    except ValueError as exc:
        raise UserError(f"finetune.target_modules: {str(exc).splitlines()[0]}") from exc
