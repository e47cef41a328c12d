"""Batched decoding through a model's KV cache, for lmforge's native GPT and `transformers` models alike
(both take `cache=` and `position_ids=` and return `.logits` and `.cache`).

Rows are left-padded to one width and start at position 0 (position ids from the attention mask, as
`transformers`' own `generate` does), so a padded row decodes exactly as it would alone. Each row stops
at eos or when `done(row, tokens)` says so; the batch stops when every row has.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn


@torch.no_grad()
def decode_batch(model: nn.Module, prompts: list[list[int]], max_new_tokens: int, pad_id: int,
                 eos_id: int | None, pick: Callable[[torch.Tensor], torch.Tensor],
                 done: Callable[[int, list[int]], bool]) -> list[list[int]]:
    """The new tokens of each prompt (eos excluded): `pick(logits [B, vocab])` gives the next ids [B]."""
    device = next(model.parameters()).device
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[pad_id] * (width - len(p)) + p for p in prompts], device=device)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
    positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)
    new: list[list[int]] = [[] for _ in prompts]
    finished = [False] * len(prompts)
    cache = None
    for _ in range(max_new_tokens):
        out = model(input_ids=ids, attention_mask=mask, position_ids=positions, cache=cache, use_cache=True)
        logits, cache = out.logits, out.cache
        tokens = pick(logits[:, -1].float())
        for row, token in enumerate(tokens.tolist()):
            if finished[row]:
                continue
            if token == eos_id:
                finished[row] = True
                continue
            new[row].append(token)
            finished[row] = done(row, new[row])
        if all(finished):
            break
        ids = tokens[:, None].to(device)
        mask = torch.cat([mask, mask.new_ones(len(prompts), 1)], dim=1)
        positions = positions[:, -1:] + 1
    return new


def greedy(logits: torch.Tensor) -> torch.Tensor:
    return logits.argmax(-1)


def sampler(temperature: float, top_k: int | None, top_p: float | None,
            generator: torch.Generator | None) -> Callable[[torch.Tensor], torch.Tensor]:
    """`pick` for sampling: each row drawn as `lmforge generate` draws (lmforge.generation.sample_next)."""
    from lmforge.generation import sample_next

    def pick(logits: torch.Tensor) -> torch.Tensor:
        return torch.tensor([sample_next(row, temperature, top_k, top_p, generator) for row in logits])

    return pick
