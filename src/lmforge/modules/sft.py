"""Supervised fine-tuning: the causal-LM loss on response tokens only, with labels aligned to
input_ids (Hugging Face style, as `lmforge.data.sft` makes them), a few greedy samples at the end of
fitting, and exact match of greedy generations on held-out test prompts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Literal, Optional

import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import nn

from lmforge.atomic import write_text
from lmforge.data.sft import SFTDataModule
from lmforge.generation import generate
from lmforge.modules.causal_lm import IGNORE_INDEX, CausalLMModule, lm_loss
from lmforge.runs.directory import TEST_GENERATIONS


def shifted_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of predicting labels[t+1] from position t (labels aligned with input_ids)."""
    return lm_loss(logits[:, :-1], labels[:, 1:])


class SFTModule(CausalLMModule):
    """`CausalLMModule` for batches `{"input_ids", "attention_mask", "labels"}` whose labels are
    aligned with input_ids (-100 on prompt and padding): val/loss and val/ppl count response tokens
    only (no bpb: SFT data has no bytes per token). When fitting ends, greedily continues up to
    `num_samples` of the datamodule's `val_prompts` by `sample_max_new_tokens` tokens and prints them.
    At test, greedily answers the first `exact_match_prompts` test prompts (up to `sample_max_new_tokens`
    tokens each) and logs `test/exact_match`, the share whose answer equals the reference (both stripped);
    `on_run_end` writes them to `test_generations.jsonl`."""

    def __init__(self, model: nn.Module, optimizer: Optional[Callable] = None,
                 scheduler: Optional[Callable] = None, weight_decay_embeddings: bool = False,
                 sample_max_new_tokens: int = 48, num_samples: int = 3, exact_match_prompts: int = 16,
                 nan_policy: Literal["stop", "skip"] = "stop"):
        super().__init__(model, optimizer, scheduler, weight_decay_embeddings=weight_decay_embeddings,
                         nan_policy=nan_policy)
        self.sample_max_new_tokens = sample_max_new_tokens
        self.num_samples = num_samples
        self.exact_match_prompts = exact_match_prompts
        self.samples: list[tuple[str, str]] = []  # (prompt, greedy continuation) from the end of fitting
        self.test_generations: list[dict[str, str]] = []  # {prompt, reference, generated} of the last test

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

    def on_test_epoch_end(self) -> None:
        """The test loss, then exact match of greedy answers to the first test prompts. Every rank
        generates the same answers (so sharded models work): the share needs no syncing."""
        super().on_test_epoch_end()
        datamodule = self.trainer.datamodule
        self.test_generations = []
        if self.exact_match_prompts <= 0 or not isinstance(datamodule, SFTDataModule):
            return
        for prompt, reference in datamodule.test_pairs(self.exact_match_prompts):
            text = generate(self.model, datamodule.tokenizer, prompt, max_new_tokens=self.sample_max_new_tokens,
                            temperature=0.0)
            self.test_generations.append({"prompt": prompt, "reference": reference, "generated": text})
        if self.test_generations:
            hits = sum(g["generated"].strip() == g["reference"].strip() for g in self.test_generations)
            self.log("test/exact_match", hits / len(self.test_generations), sync_dist=True)  # the same on every rank
            rank_zero_info(f"test/exact_match: {hits} of {len(self.test_generations)} greedy answers to test "
                           f"prompts equal the reference")

    def on_run_end(self, run_dir: Path, datamodule: Any) -> Optional[Path]:
        """Write `test_generations.jsonl` (prompt, reference, generated) of the last test; returns its path
        (None when no test generated)."""
        if not self.test_generations:
            return None
        lines = "".join(json.dumps(g, ensure_ascii=False) + "\n" for g in self.test_generations)
        return write_text(Path(run_dir) / TEST_GENERATIONS, lines)
