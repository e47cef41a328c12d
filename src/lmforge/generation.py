"""Text generation from a causal LM: a small sampling loop (greedy, temperature, top-k, top-p) with
a KV cache, streaming decoded text as it goes. Used by `lmforge generate` and the samples callback."""

from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import nn

from lmforge.models.contract import context_length, unwrap


def sample_next(logits: torch.Tensor, temperature: float = 1.0, top_k: Optional[int] = None,
                top_p: Optional[float] = None, generator: Optional[torch.Generator] = None) -> int:
    """Pick the next token id from 1-D `logits`: argmax at temperature 0, else sample the filtered softmax."""
    if temperature <= 0:
        return int(logits.argmax())
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.numel():
        kth = torch.topk(logits, top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        probs = sorted_logits.softmax(-1)
        # Drop a token when the tokens before it already hold top_p of the mass (the first always stays).
        drop = probs.cumsum(-1) - probs >= top_p
        logits = logits.masked_fill(drop.scatter(0, order, drop), float("-inf"))
    probs = logits.softmax(-1)
    return int(torch.multinomial(probs, 1, generator=generator))


def new_tokens_cap(model: nn.Module, requested: int) -> int:
    """At most the model's context of new tokens: past it each token only slides a window over what was
    generated, and a huge request (max_new_tokens=100000000) would run until killed."""
    limit = context_length(model)
    return min(requested, limit) if limit else requested


@torch.no_grad()
def generate(model: nn.Module, tokenizer, prompt: str, max_new_tokens: int = 64, temperature: float = 1.0,
             top_k: Optional[int] = None, top_p: Optional[float] = None, seed: Optional[int] = None,
             stream: Optional[Callable[[str], None]] = None) -> str:
    """Continue `prompt` by up to `max_new_tokens` tokens (at most the model's context: `new_tokens_cap`),
    stopping at eos; returns the continuation.

    The context is cropped to the model's maximum positions. `seed` makes sampling reproducible
    without touching the global RNG. `stream(piece)` receives the text as it is produced; pieces are
    held back while they end in an incomplete multi-byte character, and concatenate to the result.
    """
    model = unwrap(model)  # a torch.compile'd model would recompile per length
    device = next(model.parameters()).device
    eos = tokenizer.eos_token_id
    prompt_ids = tokenizer.encode(prompt, add_special_tokens=False)
    if not prompt_ids:  # an empty prompt starts a fresh document
        start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else eos
        if start is None:
            raise ValueError("an empty prompt needs a tokenizer with a bos or eos token")
        prompt_ids = [start]
    limit = context_length(model)
    max_new_tokens = new_tokens_cap(model, max_new_tokens)
    generator = None
    if seed is not None:
        generator = torch.Generator(device=device).manual_seed(seed)

    def decode(new: list[int]) -> str:
        # Decode with the prompt in front so tokenizers that strip a leading space decode it right.
        prefix = tokenizer.decode(prompt_ids, skip_special_tokens=True)
        full = tokenizer.decode(prompt_ids + new, skip_special_tokens=True)
        return full[len(prefix):] if full.startswith(prefix) else tokenizer.decode(new, skip_special_tokens=True)

    was_training = model.training
    model.eval()
    new: list[int] = []
    sent = ""
    past, fed = None, 0  # the KV cache and how many tokens of the context it holds
    try:
        for _ in range(max_new_tokens):
            ids = prompt_ids + new
            if limit is not None and len(ids) > limit:  # slide the window: recompute without a cache
                ids, past, fed = ids[-limit:], None, 0
            inputs = torch.tensor([ids[fed:]], device=device)
            out = model(input_ids=inputs, cache=past, use_cache=True)
            past, fed = out.cache, len(ids)
            if limit is not None and fed >= limit:
                past, fed = None, 0  # the next token would not fit beside this cache
            token = sample_next(out.logits[0, -1], temperature, top_k, top_p, generator)
            if token == eos:
                break
            new.append(token)
            if stream is not None:
                text = decode(new)
                if not text.endswith("\ufffd") and len(text) > len(sent):
                    stream(text[len(sent):])
                    sent = text
    finally:
        model.train(was_training)
    text = decode(new)
    if stream is not None and len(text) > len(sent):
        stream(text[len(sent):])
    return text
