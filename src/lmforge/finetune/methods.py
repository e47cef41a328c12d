"""`finetune=full|freeze|lora`: which parameters of a pretrained model train (`_target_` nodes)."""

from __future__ import annotations

import logging
import re
import warnings
from typing import Annotated, Optional

from pydantic import Field
from torch import nn

from lmforge.errors import UserError

log = logging.getLogger(__name__)

# Name parts of heads across architectures: HF's `score` (GPT-2/Llama) and `classifier` (BERT), our
# `head`, the LM head, and peft's trainable `modules_to_save` copies.
HEAD_NAMES = ("score", "classifier", "head", "lm_head", "modules_to_save")
# Where the numbered transformer blocks live: transformer.h.3, model.layers.3, encoder.layer.3, ...
LAYER_INDEX = re.compile(r"\.(?:h|layers|layer)\.(\d+)\.")
# LoRA's layers in image classifiers (by config.model_type), which peft has no default for: ViT's
# attention, ConvNeXt's pointwise (linear) layers, ResNet's convolutions.
IMAGE_LORA_TARGETS = {"vit": ["q_proj", "v_proj"], "convnext": ["pwconv1", "pwconv2"], "resnet": ["convolution"]}


def is_head(name: str) -> bool:
    """Whether the parameter `name` belongs to a head (trained by train_only_head, given head_lr)."""
    return any(part in HEAD_NAMES for part in name.split("."))


class Finetune:
    """Fine-tune every parameter except those frozen: the embeddings, the first `freeze_layers` blocks,
    or everything but the head (`train_only_head`, a linear probe). `head_lr` is read by the module."""

    def __init__(self, freeze_embeddings: bool, freeze_layers: Annotated[int, Field(ge=0)], train_only_head: bool,
                 head_lr: Optional[Annotated[float, Field(gt=0)]]) -> None:
        self.freeze_embeddings = freeze_embeddings
        self.freeze_layers = freeze_layers
        self.train_only_head = train_only_head
        self.head_lr = head_lr

    def apply(self, model: nn.Module) -> nn.Module:
        """Freeze what the settings say (subclasses wrap the model first); logs trainable vs total."""
        self.freeze(model)
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        total = sum(p.numel() for p in model.parameters())
        log.info("finetune=%s: %s of %s parameters train (%.2f%%)", type(self).__name__, f"{trainable:,}",
                 f"{total:,}", 100 * trainable / max(1, total))
        if trainable == 0:
            raise UserError("finetune: every parameter is frozen (check finetune.freeze_layers / train_only_head)")
        return model

    def freeze(self, model: nn.Module) -> None:
        embedding_ids = {id(p) for m in model.modules() if isinstance(m, nn.Embedding) for p in m.parameters()}
        for name, param in model.named_parameters():
            layer = LAYER_INDEX.search(f".{name}")
            if self.train_only_head and not is_head(name) and "lora_" not in name:
                param.requires_grad_(False)
            elif self.freeze_embeddings and id(param) in embedding_ids and not is_head(name):
                param.requires_grad_(False)
            elif layer and int(layer.group(1)) < self.freeze_layers:
                param.requires_grad_(False)


class LoRA(Finetune):
    """LoRA adapters (peft) of rank `r` on `target_modules` (null: peft's default for the architecture);
    the head, if any, trains fully and is saved too. Merged into the weights on export."""

    def __init__(self, r: Annotated[int, Field(ge=1)], alpha: Annotated[float, Field(gt=0)],
                 dropout: Annotated[float, Field(ge=0, lt=1)], target_modules: Optional[list[str]],
                 freeze_embeddings: bool, freeze_layers: Annotated[int, Field(ge=0)], train_only_head: bool,
                 head_lr: Optional[Annotated[float, Field(gt=0)]]) -> None:
        super().__init__(freeze_embeddings, freeze_layers, train_only_head, head_lr)
        self.r, self.alpha, self.dropout, self.target_modules = r, alpha, dropout, target_modules

    def apply(self, model: nn.Module) -> nn.Module:
        try:
            from peft import LoraConfig, TaskType, get_peft_model
        except ImportError as exc:
            raise UserError("finetune=lora needs peft: pip install 'lmforge[finetune]'") from exc
        from transformers.pytorch_utils import Conv1D

        classifier = type(model).__name__.endswith("ForSequenceClassification")
        images = type(model).__name__.endswith("ForImageClassification")
        targets = self.target_modules or (IMAGE_LORA_TARGETS.get(model.config.model_type) if images else None)
        config = LoraConfig(r=self.r, lora_alpha=self.alpha, lora_dropout=self.dropout,
                            target_modules=targets,
                            # an image classifier's head (`classifier`) trains fully; it takes pixels, not ids
                            modules_to_save=["classifier"] if images else None,
                            # GPT-2's layers are Conv1D (weights stored transposed): say so, or peft warns and guesses
                            fan_in_fan_out=any(isinstance(m, Conv1D) for m in model.modules()),
                            task_type=None if images else TaskType.SEQ_CLS if classifier else TaskType.CAUSAL_LM)
        try:
            with warnings.catch_warnings():  # peft asks transformers a deprecated name (not ours to fix)
                warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
                model = get_peft_model(model, config)
        except ValueError as exc:
            raise UserError(f"finetune.target_modules: {str(exc).splitlines()[0]}") from exc
        return super().apply(model)
