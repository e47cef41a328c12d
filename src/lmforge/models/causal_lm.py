"""Causal language models: GPT-2, Llama and a modern (Qwen3-layout) shape with random weights, or a
pretrained Hugging Face directory. The shapes build lmforge's native GPT (`lmforge.models.gpt`), which
exports to the stock `transformers` class with equal logits; `impl=hf` builds that class directly."""

from __future__ import annotations

from typing import Annotated, Optional

import torch
from pydantic import Field
from torch import nn

from lmforge.data.contract import FromData
from lmforge.errors import UserError

RopeTheta = Annotated[float, Field(gt=0)]  # the base of the rotary frequencies: 0 or below gives NaN


def _check(vocab_size: Optional[int], block_size: int, n_layer: int, n_head: int, n_embd: int,
           dropout: float) -> None:
    """Shape checks shared by the builders, naming the config key at fault."""
    if vocab_size is None:
        raise UserError("model.vocab_size is not set: it follows the tokenizer when the data provides one "
                        "(use data=text), or set model.vocab_size=N")
    for key, value in [("vocab_size", vocab_size), ("block_size", block_size), ("n_layer", n_layer),
                       ("n_head", n_head), ("n_embd", n_embd)]:
        if not isinstance(value, int) or value <= 0:
            raise UserError(f"model.{key} must be a positive integer, got {value!r}")
    if n_embd % n_head:
        raise UserError(f"model.n_head ({n_head}) must divide model.n_embd ({n_embd})")
    if not 0.0 <= dropout < 1.0:
        raise UserError(f"model.dropout must be in [0, 1), got {dropout}")


IMPLS = ("native", "hf")


def _build(config, impl: str, hf_class: str, **native):
    """The native model of `config` (`lmforge.models.gpt.GPT`) or, with impl=hf, the stock HF class."""
    if impl == "native":
        from lmforge.models.gpt import GPT

        return GPT(config, **native)
    if impl != "hf":
        raise UserError(f"model.impl must be one of {', '.join(IMPLS)}, got {impl!r}")
    import transformers

    # getattr: a transformers class by name
    return getattr(transformers, hf_class)._from_config(config, attn_implementation="sdpa")


def gpt2(vocab_size: FromData[Optional[int]] = None, block_size: int = 256, n_layer: int = 4, n_head: int = 4,
         n_embd: int = 128, dropout: float = 0.0, bias: bool = True,
         tie_word_embeddings: bool = True, activation: str = "gelu", impl: str = "native") -> nn.Module:
    """A GPT-2 (learned positions, LayerNorm, GELU MLP of 4*n_embd) with random weights.

    `activation`: "gelu" (exact, faster on CPUs) or "gelu_new" (the tanh approximation of OpenAI's GPT-2).
    impl=native (default): lmforge's fast GPT, exported as `GPT2LMHeadModel`; `bias=False` drops the
    biases (exported as zeros). impl=hf: `GPT2LMHeadModel` itself, whose `bias=False` zeroes and
    freezes every bias (the function of a bias-free model).
    """
    _check(vocab_size, block_size, n_layer, n_head, n_embd, dropout)
    if activation not in ("gelu", "gelu_new"):
        raise UserError(f"model.activation must be gelu or gelu_new, got {activation!r}")
    from transformers import GPT2Config

    config = GPT2Config(vocab_size=vocab_size, n_positions=block_size, n_layer=n_layer, n_head=n_head,
                        n_embd=n_embd, activation_function=activation, resid_pdrop=dropout, embd_pdrop=dropout,
                        attn_pdrop=dropout, tie_word_embeddings=tie_word_embeddings, bos_token_id=None,
                        eos_token_id=None)
    model = _build(config, impl, "GPT2LMHeadModel", bias=bias)
    if impl == "hf" and not bias:
        for name, param in model.named_parameters():
            if name.endswith(".bias"):
                with torch.no_grad():
                    param.zero_()
                param.requires_grad_(False)
    return model


def _rope_config(vocab_size, block_size, n_layer, n_head, n_kv_head, n_embd, intermediate_size, dropout,
                 rope_theta, tie_word_embeddings) -> dict:
    """The LlamaConfig / Qwen3Config keywords of our shape keys, checked."""
    _check(vocab_size, block_size, n_layer, n_head, n_embd, dropout)
    n_kv_head = n_head if n_kv_head is None else n_kv_head
    if not isinstance(n_kv_head, int) or n_kv_head <= 0 or n_head % n_kv_head:
        raise UserError(f"model.n_kv_head ({n_kv_head}) must be a positive divisor of model.n_head ({n_head})")
    if intermediate_size is None:
        intermediate_size = -(-8 * n_embd // 3 // 64) * 64
    if intermediate_size <= 0:
        raise UserError(f"model.intermediate_size must be positive, got {intermediate_size}")
    return dict(vocab_size=vocab_size, max_position_embeddings=block_size, num_hidden_layers=n_layer,
                num_attention_heads=n_head, num_key_value_heads=n_kv_head, hidden_size=n_embd,
                head_dim=n_embd // n_head, intermediate_size=intermediate_size, attention_dropout=dropout,
                rope_parameters={"rope_type": "default", "rope_theta": float(rope_theta)},
                tie_word_embeddings=tie_word_embeddings, bos_token_id=None, eos_token_id=None, pad_token_id=None)


def llama(vocab_size: FromData[Optional[int]] = None, block_size: int = 256, n_layer: int = 4, n_head: int = 4,
          n_kv_head: Optional[int] = None, n_embd: int = 128, intermediate_size: Optional[int] = None,
          dropout: float = 0.0, rope_theta: RopeTheta = 10000.0, tie_word_embeddings: bool = False,
          impl: str = "native") -> nn.Module:
    """A Llama (RoPE, RMSNorm, SwiGLU, grouped-query attention, no biases) with random weights.

    `n_kv_head` defaults to `n_head` (plain multi-head attention); `intermediate_size` defaults to
    8/3 * n_embd rounded up to a multiple of 64, the usual SwiGLU width for the same FLOPs as 4x GELU.
    impl=native (default): lmforge's fast GPT, exported as `LlamaForCausalLM`; impl=hf: that class.
    """
    from transformers import LlamaConfig

    config = LlamaConfig(**_rope_config(vocab_size, block_size, n_layer, n_head, n_kv_head, n_embd,
                                        intermediate_size, dropout, rope_theta, tie_word_embeddings))
    return _build(config, impl, "LlamaForCausalLM")


def modern(vocab_size: FromData[Optional[int]] = None, block_size: int = 256, n_layer: int = 4, n_head: int = 4,
           n_kv_head: Optional[int] = None, n_embd: int = 128, intermediate_size: Optional[int] = None,
           rope_theta: RopeTheta = 10000.0, tie_word_embeddings: bool = False, zero_init_out: bool = True,
           impl: str = "native") -> nn.Module:
    """A modern small LM: RoPE, RMSNorm, per-head RMSNorm on queries and keys (QK-norm), SwiGLU, untied
    head, no biases or dropout, output projections of attention and MLP initialised at zero
    (`zero_init_out`). Exactly the layout of `Qwen3ForCausalLM`, as which it exports."""
    from transformers import Qwen3Config

    config = Qwen3Config(**_rope_config(vocab_size, block_size, n_layer, n_head, n_kv_head, n_embd,
                                        intermediate_size, 0.0, rope_theta, tie_word_embeddings),
                         use_sliding_window=False, max_window_layers=n_layer)
    return _build(config, impl, "Qwen3ForCausalLM", zero_init_out=zero_init_out)


def pretrained(path: Optional[str] = None, vocab_size: FromData[Optional[int]] = None, dtype: Optional[str] = None,
               attn_implementation: str = "sdpa", trust_remote_code: bool = False) -> nn.Module:
    """`AutoModelForCausalLM.from_pretrained(path)`: a local model directory, or a hub name when online.

    `vocab_size` (filled from the tokenizer) grows the embeddings when the tokenizer has more tokens
    than the model (e.g. an added pad token); it never shrinks them.
    """
    from transformers import AutoModelForCausalLM

    if not path:
        raise UserError("model.path is not set: a Hugging Face model directory (or set init_from=...)")
    kwargs = {"attn_implementation": attn_implementation, "trust_remote_code": trust_remote_code}
    if dtype is not None:
        # getattr: a torch dtype by its config name
        kwargs["dtype"] = getattr(torch, dtype) if isinstance(dtype, str) and dtype != "auto" else dtype
    try:
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except (OSError, ValueError) as e:
        raise UserError(f"model.path: cannot load a causal LM from {path!r}: {str(e).splitlines()[0]}") from e
    if vocab_size is not None and vocab_size > model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(vocab_size)
    return model
