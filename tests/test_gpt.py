"""lmforge's native GPT (models/gpt.py): the same function as the stock `transformers` class it exports
to (GPT-2, Llama, Qwen3), a KV cache that agrees with recomputing, padding masks, torch.compile."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

from conftest import byte_bpe
from lmforge.generation import generate
from lmforge.models import cpu_kernels
from lmforge.models.causal_lm import gpt2, llama, modern
from lmforge.models.cpu_kernels import RMSNorm
from lmforge.models.export import export_hf
from lmforge.models.gpt import GPT

SHAPE = {"vocab_size": 300, "block_size": 64, "n_layer": 2, "n_head": 4, "n_embd": 32}
VARIANTS = {
    "gpt2": (gpt2, {}, "GPT2LMHeadModel"),
    "gpt2_nobias_untied_tanh": (gpt2, {"bias": False, "tie_word_embeddings": False, "activation": "gelu_new"},
                                "GPT2LMHeadModel"),
    "llama_gqa": (llama, {"n_kv_head": 2}, "LlamaForCausalLM"),
    "modern": (modern, {"n_kv_head": 2}, "Qwen3ForCausalLM"),
}


def build(name: str) -> GPT:
    """A variant with every weight random (norms, biases and zero-initialised projections too), so
    that each one takes part in the comparison."""
    builder, kw, _ = VARIANTS[name]
    torch.manual_seed(0)
    model = builder(**SHAPE, **kw).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.1)
    return model


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerFast:
    return byte_bpe()


@pytest.mark.parametrize("name", list(VARIANTS))
def test_native_equals_its_stock_transformers_class(name: str) -> None:
    model = build(name)
    hf = model.to_hf().eval()
    assert type(hf).__name__ == VARIANTS[name][2] and type(model).__name__ == "GPT"
    ids = torch.randint(0, 300, (3, 40))
    mask = torch.ones(3, 40, dtype=torch.long)
    mask[0, :7] = 0  # left padding
    with torch.no_grad():
        assert (model(ids).logits - hf(input_ids=ids).logits).abs().max() < 1e-5
        padded, hf_padded = model(ids, attention_mask=mask).logits, hf(input_ids=ids, attention_mask=mask).logits
        assert (padded[0, 7:] - hf_padded[0, 7:]).abs().max() < 1e-5  # real tokens of the padded row
        assert (padded[1:] - hf_padded[1:]).abs().max() < 1e-5


@pytest.mark.parametrize("name", ["llama_gqa", "modern"])
def test_short_contexts_on_cpu_attend_as_the_fused_kernel_does(name: str, monkeypatch) -> None:
    """Up to BMM_ATTENTION_MAX_T positions, grouped-query attention on CPU runs as batched matmuls (faster
    there): the logits and every gradient are those of scaled_dot_product_attention."""
    model = build(name).train()
    ids = torch.randint(0, 300, (3, 40))

    def logits_and_grads() -> tuple[torch.Tensor, list[torch.Tensor]]:
        model.zero_grad()
        logits = model(ids).logits
        logits.square().mean().backward()
        return logits.detach(), [p.grad.clone() for p in model.parameters()]

    bmm, bmm_grads = logits_and_grads()
    monkeypatch.setattr(cpu_kernels, "BMM_ATTENTION_MAX_T", 0)
    fused, fused_grads = logits_and_grads()
    assert not torch.equal(bmm, fused)  # two computations ...
    assert (bmm - fused).abs().max() < 1e-5  # ... of one function
    for a, b in zip(bmm_grads, fused_grads):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", list(VARIANTS))
def test_kv_cache_gives_the_logits_of_recomputing(name: str) -> None:
    model = build(name)
    ids = torch.randint(0, 300, (2, 30))
    with torch.no_grad():
        full = model(ids).logits
        first = model(ids[:, :20], use_cache=True)
        one = model(ids[:, 20:21], cache=first.cache, use_cache=True)
        rest = model(ids[:, 21:], cache=one.cache, use_cache=True)  # several new tokens beside a cache
    assert len(rest.cache) == 30 and model(ids).cache is None
    assert (torch.cat([first.logits, one.logits, rest.logits], 1) - full).abs().max() < 1e-5


@pytest.mark.parametrize("name", list(VARIANTS))
def test_export_reloads_as_the_stock_class_and_generates_the_same(name: str, tokenizer, tmp_path: Path) -> None:
    model = build(name)
    out = export_hf(model, tokenizer, tmp_path / name)
    again = AutoModelForCausalLM.from_pretrained(out).eval()
    assert type(again).__name__ == VARIANTS[name][2]
    ids = torch.randint(0, 258, (2, 33))
    with torch.no_grad():
        assert (model(ids).logits - again(input_ids=ids).logits).abs().max() < 1e-5
    if name.startswith("gpt2_nobias"):
        biases = [p for n, p in again.named_parameters() if n.endswith(".bias")]
        assert biases and not any(p.any() for p in biases)  # a bias-free model exports zero biases
    ours = generate(model, tokenizer, "héllo", max_new_tokens=12, temperature=0.0)
    assert ours == generate(again, tokenizer, "héllo", max_new_tokens=12, temperature=0.0)


def test_modern_starts_with_zero_output_projections_and_identity_blocks() -> None:
    model = modern(**SHAPE)
    for layer in model.layers:
        assert not layer.attn.o.weight.any() and not layer.mlp.down.weight.any()
        assert layer.attn.q_norm is not None and layer.attn.qkv_bias is None
    assert model.lm_head.weight is not model.wte.weight and model.wpe is None
    ids = torch.randint(0, 300, (1, 10))
    with torch.no_grad():  # every block is the identity: logits = head(norm(embedding))
        assert torch.allclose(model(ids).logits, model.lm_head(model.norm(model.wte(ids))))


def test_impl_hf_builds_the_stock_classes() -> None:
    for builder, name in ((gpt2, "GPT2LMHeadModel"), (llama, "LlamaForCausalLM"), (modern, "Qwen3ForCausalLM")):
        assert type(builder(**SHAPE, impl="hf")).__name__ == name


def test_compiled_model_trains_like_the_eager_one() -> None:
    """torch.compile (inductor, CPU kernels built with gcc) gives the eager model's loss and gradients."""
    model = build("llama_gqa").train()
    compiled = torch.compile(model)
    ids = torch.randint(0, 300, (2, 32))
    losses, grads = [], []
    for forward in (model, compiled):
        model.zero_grad()
        loss = torch.nn.functional.cross_entropy(forward(ids).logits.flatten(0, 1), ids.flatten())
        loss.backward()
        losses.append(loss.detach())
        grads.append(model.layers[0].attn.qkv.grad.clone())
    assert torch.allclose(losses[0], losses[1], atol=1e-5) and torch.allclose(grads[0], grads[1], atol=1e-5)


def test_rmsnorm_training_path_has_the_gradients_of_torchs() -> None:
    """models.cpu_kernels.RMSNorm's hand-written backward (fp32 on CPU) against nn.RMSNorm's autograd."""
    torch.manual_seed(0)
    ours, reference = RMSNorm(32, eps=1e-6), torch.nn.RMSNorm(32, eps=1e-6)
    with torch.no_grad():
        ours.weight.uniform_(0.5, 1.5)
        reference.weight.copy_(ours.weight)
    x = torch.randn(3, 5, 32) * 3
    grad = torch.randn(3, 5, 32)
    results = []
    for module in (ours, reference):
        inputs = x.clone().requires_grad_(True)
        out = module(inputs)
        out.backward(grad)
        results.append((out.detach(), inputs.grad, module.weight.grad))
    for mine, theirs in zip(*results):
        torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-6)
    assert type(ours(x.requires_grad_(True)).grad_fn).__name__ == "_RMSNormFunctionBackward"  # the hand-written path ran
