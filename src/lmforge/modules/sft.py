"""Supervised fine-tuning: the causal-LM loss on response tokens only, with labels aligned to
input_ids (Hugging Face style, as `lmforge.data.sft` makes them), and a few greedy samples at the end."""

from __future__ import annotations

from typing import Callable, Literal, Optional

import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import nn

from lmforge.data.sft import SFTDataModule
from lmforge.generation import generate
from lmforge.modules.causal_lm import IGNORE_INDEX, CausalLMModule, lm_loss


def shifted_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of predicting labels[t+1] from position t (labels aligned with input_ids)."""
    return lm_loss(logits[:, :-1], labels[:, 1:])


class SFTModule(CausalLMModule):
    """`CausalLMModule` for batches `{"input_ids", "attention_mask", "labels"}` whose labels are
    aligned with input_ids (-100 on prompt and padding): val/loss and val/ppl count response tokens
    only (no bpb: SFT data has no bytes per token). When fitting ends, greedily continues up to
    `num_samples` of the datamodule's `val_prompts` by `sample_max_new_tokens` tokens and prints them."""

    def __init__(self, model: nn.Module, optimizer: Optional[Callable] = None,
                 scheduler: Optional[Callable] = None, weight_decay_embeddings: bool = False,
                 sample_max_new_tokens: int = 48, num_samples: int = 3, nan_policy: Literal["stop", "skip"] = "stop"):
        super().__init__(model, optimizer, scheduler, weight_decay_embeddings=weight_decay_embeddings,
                         nan_policy=nan_policy)
        self.sample_max_new_tokens = sample_max_new_tokens
        self.num_samples = num_samples
        self.samples: list[tuple[str, str]] = []  # (prompt, greedy continuation) from the end of fitting

    def batch_loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Loss over response tokens only, labels shifted here; attention_mask masks the padding."""
        labels = batch["labels"]
        logits = self(batch["input_ids"], batch.get("attention_mask"))
        return shifted_loss(logits, labels), (labels[:, 1:] != IGNORE_INDEX).sum()

    def on_train_end(self) -> None:
        """Greedy samples from the first val prompts. Every rank generates (so sharded models work);
        rank 0 prints. Not on_fit_end: by then the strategy may have moved the model off the device."""
        datamodule = self.trainer.datamodule
        if self.num_samples <= 0 or not isinstance(datamodule, SFTDataModule):
            return
        self.samples = []
        for prompt in datamodule.val_prompts[: self.num_samples]:
            text = generate(self.model, datamodule.tokenizer, prompt, max_new_tokens=self.sample_max_new_tokens,
                            temperature=0.0)
            self.samples.append((prompt, text))
            rank_zero_info(f"[sft sample] {prompt!r} -> {text!r}")
