"""Native causal LMs of the GPT family in one compact module: GPT-2 (learned positions, LayerNorm, GELU),
Llama (RoPE, RMSNorm, SwiGLU, grouped-query attention) and the "modern" Qwen3 layout (Llama + per-head
RMSNorm on queries and keys). Written for speed (fused projections, `scaled_dot_product_attention`, no
masks or dispatch layers), it carries the stock `transformers` config it is equivalent to as `.config`,
and `to_hf()` returns that stock class with the same weights and logits (no remote code)."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import nn

from lmforge.models import cpu_kernels
from lmforge.models.cpu_kernels import RMSNorm, causal_attention_bmm


class KVCache:
    """Keys and values of the positions seen so far: one (k, v) pair [B, kv_heads, T, head_dim] per layer."""

    def __init__(self) -> None:
        self.layers: list[tuple[torch.Tensor, torch.Tensor]] = []

    def __len__(self) -> int:
        return self.layers[0][0].shape[2] if self.layers else 0

    def update(self, index: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append this step's keys and values to layer `index`; return all of them."""
        if index < len(self.layers):
            past_k, past_v = self.layers[index]
            k, v = torch.cat((past_k, k), dim=2), torch.cat((past_v, v), dim=2)
            self.layers[index] = (k, v)
        else:
            self.layers.append((k, v))
        return k, v


class LMOutput(NamedTuple):
    logits: torch.Tensor  # [B, T, vocab]
    cache: Optional[KVCache] = None  # with use_cache=True: pass it back with the next tokens


@dataclass(frozen=True)
class Spec:
    """The architecture, read off the `transformers` config (plus what such a config cannot say)."""

    vocab_size: int
    block_size: int
    n_layer: int
    n_head: int
    n_kv_head: int
    n_embd: int
    hidden: int  # MLP width
    family: str  # "gpt2" | "llama" | "qwen3" (= the config's model_type)
    act: str  # the MLP's activation, as `transformers` names it
    bias: bool
    tie: bool
    dropout: float
    eps: float
    rope_theta: float = 10000.0

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @classmethod
    def of(cls, config: Any, bias: Optional[bool] = None) -> "Spec":
        family = config.model_type
        tie = bool(config.tie_word_embeddings)
        if family == "gpt2":
            return cls(config.vocab_size, config.n_positions, config.n_layer, config.n_head, config.n_head,
                       config.n_embd, config.n_inner or 4 * config.n_embd, family, config.activation_function,
                       True if bias is None else bias, tie, float(config.resid_pdrop), config.layer_norm_epsilon)
        if family in ("llama", "qwen3"):
            if config.hidden_size != config.num_attention_heads * config.head_dim:
                raise ValueError("head_dim must be hidden_size / num_attention_heads")
            # getattr: Qwen3Config has no mlp_bias
            if config.attention_bias or getattr(config, "mlp_bias", False) or bias:
                raise ValueError(f"the native {family} has no biases")
            return cls(config.vocab_size, config.max_position_embeddings, config.num_hidden_layers,
                       config.num_attention_heads, config.num_key_value_heads, config.hidden_size,
                       config.intermediate_size, family, config.hidden_act, False, tie,
                       float(config.attention_dropout), config.rms_norm_eps,
                       float(config.rope_parameters["rope_theta"]))
        raise ValueError(f"no native implementation of model_type {family!r}")

    def __post_init__(self) -> None:
        if self.act not in ACTIVATIONS[self.family]:
            raise ValueError(f"the native {self.family} supports activations {ACTIVATIONS[self.family]}")


# GPT-2's MLP: exact GELU ("gelu", faster on CPU) or its tanh approximation ("gelu_new", GPT-2's own).
ACTIVATIONS = {"gpt2": ("gelu", "gelu_new", "gelu_pytorch_tanh"), "llama": ("silu",), "qwen3": ("silu",)}


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary positions, the half-split convention of `transformers` (pairs i and i + head_dim/2);
    `sin` carries the sign of the rotation (-sin on the first half), which saves a negation."""
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat((x2, x1), dim=-1) * sin


def norm(spec: Spec, dim: int) -> nn.Module:
    if spec.family == "gpt2":
        return nn.LayerNorm(dim, eps=spec.eps, bias=spec.bias)
    return RMSNorm(dim, eps=spec.eps)


def stacked(groups: int, rows: int, cols: int) -> nn.Parameter:
    """A weight of `groups` matrices [rows, cols] used as one [groups * rows, cols] matmul: one kernel
    instead of several, while Muon still orthogonalises each matrix (it takes leading dims as a batch)."""
    return nn.Parameter(torch.empty(groups, rows, cols))


class Attention(nn.Module):
    """Causal self-attention. `qkv` stacks the query heads (in n_head / n_kv_head blocks of n_kv_head
    heads), the keys and the values: [n_head / n_kv_head + 2, n_kv_head * head_dim, n_embd]."""

    def __init__(self, spec: Spec):
        super().__init__()
        self.n_head, self.n_kv_head, self.head_dim = spec.n_head, spec.n_kv_head, spec.head_dim
        self.kv_dim = spec.n_kv_head * spec.head_dim
        self.qkv = stacked(spec.n_head // spec.n_kv_head + 2, self.kv_dim, spec.n_embd)
        self.qkv_bias = nn.Parameter(torch.zeros(spec.n_embd + 2 * self.kv_dim)) if spec.bias else None
        self.o = nn.Linear(spec.n_embd, spec.n_embd, bias=spec.bias)
        self.q_norm = RMSNorm(spec.head_dim, eps=spec.eps) if spec.family == "qwen3" else None
        self.k_norm = RMSNorm(spec.head_dim, eps=spec.eps) if spec.family == "qwen3" else None
        self.dropout = spec.dropout

    def forward(self, x: torch.Tensor, rope: Optional[tuple[torch.Tensor, torch.Tensor]],
                mask: Optional[torch.Tensor], cache: Optional[KVCache], index: int) -> torch.Tensor:
        B, T, C = x.shape
        qkv = F.linear(x, self.qkv.flatten(0, 1), self.qkv_bias)
        if rope is None and self.q_norm is None:  # GPT-2: one split is one cat in backward, not two (~2 %)
            q, k, v = qkv.view(B, T, self.n_head + 2 * self.n_kv_head, self.head_dim).split(
                [self.n_head, self.n_kv_head, self.n_kv_head], dim=2)
            return self._attend(q, k, v, mask, cache, index)
        qk, v = qkv.split([C + self.kv_dim, self.kv_dim], dim=-1)
        qk = qk.view(B, T, self.n_head + self.n_kv_head, self.head_dim)  # queries and keys, head by head
        if self.q_norm is not None:
            q, k = qk.split([self.n_head, self.n_kv_head], dim=2)
            q, k = self.q_norm(q), self.k_norm(k)
            if rope is not None:
                q, k = rotate(q, *rope), rotate(k, *rope)
        else:
            if rope is not None:  # one rotation for queries and keys together
                qk = rotate(qk, *rope)
            q, k = qk.split([self.n_head, self.n_kv_head], dim=2)
        return self._attend(q, k, v.view(B, T, self.n_kv_head, self.head_dim), mask, cache, index)

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: Optional[torch.Tensor],
                cache: Optional[KVCache], index: int) -> torch.Tensor:
        """Attention of queries, keys and values laid out [B, T, heads, head_dim], projected out."""
        B, T = q.shape[:2]
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        if cache is not None:
            k, v = cache.update(index, k, v)
        if (self.n_kv_head != self.n_head and cache is None and mask is None and q.device.type == "cpu"
                and q.dtype == torch.float32 and T <= cpu_kernels.BMM_ATTENTION_MAX_T
                and not (self.training and self.dropout)):
            y = causal_attention_bmm(q, k, v)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None and k.shape[2] == T > 1,
                                               dropout_p=self.dropout if self.training else 0.0,
                                               enable_gqa=self.n_kv_head != self.n_head)
        return self.o(y.transpose(1, 2).reshape(B, T, -1))


class MLP(nn.Module):
    """GPT-2's GELU MLP, or Llama's SwiGLU with gate and up stacked in one weight [2, hidden, n_embd]
    (one parameter for the optimizer, two matrices for Muon)."""

    def __init__(self, spec: Spec):
        super().__init__()
        self.gated = spec.family != "gpt2"
        self.approximate = "none" if spec.act == "gelu" else "tanh"
        if self.gated:
            self.gate_up = stacked(2, spec.hidden, spec.n_embd)
            self.down = nn.Linear(spec.hidden, spec.n_embd, bias=False)
        else:
            self.fc = nn.Linear(spec.n_embd, spec.hidden, bias=spec.bias)
            self.proj = nn.Linear(spec.hidden, spec.n_embd, bias=spec.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.gated:
            return self.proj(F.gelu(self.fc(x), approximate=self.approximate))
        # Two matmuls beat one on the stack here: the halves of one output are strided, and the
        # elementwise ops on them slower than the extra matmul call.
        return self.down(F.silu(F.linear(x, self.gate_up[0])) * F.linear(x, self.gate_up[1]))

    @property
    def out(self) -> nn.Linear:
        return self.down if self.gated else self.proj


class Block(nn.Module):
    def __init__(self, spec: Spec):
        super().__init__()
        self.norm1, self.attn = norm(spec, spec.n_embd), Attention(spec)
        self.norm2, self.mlp = norm(spec, spec.n_embd), MLP(spec)
        # GPT-2 drops out the residual branches; Llama and Qwen3 only the attention weights.
        self.dropout = spec.dropout if spec.family == "gpt2" else 0.0

    def forward(self, x, rope, mask, cache, index):
        y = self.attn(self.norm1(x), rope, mask, cache, index)
        x = x + (F.dropout(y, self.dropout, self.training) if self.dropout else y)
        y = self.mlp(self.norm2(x))
        return x + (F.dropout(y, self.dropout, self.training) if self.dropout else y)


class GPT(nn.Module):
    """A decoder-only LM equivalent to the `transformers` model of `config` (GPT2Config, LlamaConfig or
    Qwen3Config). `bias=False` drops GPT-2's biases (exported as zeros); `zero_init_out` starts every
    residual branch's output projection at zero (the block is the identity at step 0)."""

    def __init__(self, config: Any, bias: Optional[bool] = None, zero_init_out: bool = False):
        super().__init__()
        self.config = config
        self.spec = spec = Spec.of(config, bias)
        self.wte = nn.Embedding(spec.vocab_size, spec.n_embd)
        self.wpe = nn.Embedding(spec.block_size, spec.n_embd) if spec.family == "gpt2" else None
        self.layers = nn.ModuleList(Block(spec) for _ in range(spec.n_layer))
        self.norm = norm(spec, spec.n_embd)
        self.lm_head = nn.Linear(spec.n_embd, spec.vocab_size, bias=False)
        if spec.tie:
            self.lm_head.weight = self.wte.weight
        if spec.family != "gpt2":
            inv_freq = spec.rope_theta ** -(torch.arange(0, spec.head_dim, 2, dtype=torch.float) / spec.head_dim)
            angles = torch.outer(torch.arange(spec.block_size, dtype=torch.float), inv_freq)
            self.register_buffer("cos", angles.cos().repeat(1, 2), persistent=False)
            self.register_buffer("sin", torch.cat((-angles.sin(), angles.sin()), dim=-1), persistent=False)
        self.reset_parameters(zero_init_out)

    @torch.no_grad()
    def reset_parameters(self, zero_init_out: bool = False) -> None:
        """Normal(0, 0.02) matrices and embeddings, zero biases, unit norms (as `transformers` does);
        GPT-2 scales the residual output projections by 1/sqrt(2 n_layer); `zero_init_out` zeroes them."""
        for module in self.modules():
            if isinstance(module, (nn.LayerNorm, nn.RMSNorm)):
                module.reset_parameters()
        for name, param in self.named_parameters():
            if param.ndim >= 2:  # embeddings, linears, stacked weights
                nn.init.normal_(param, std=0.02)
            elif name.endswith("bias"):
                nn.init.zeros_(param)
        scaled = 0.02 / math.sqrt(2 * self.spec.n_layer) if self.spec.family == "gpt2" else 0.02
        for layer in self.layers:
            for out in (layer.attn.o, layer.mlp.out):
                nn.init.normal_(out.weight, std=scaled) if not zero_init_out else nn.init.zeros_(out.weight)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.wte

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def forward(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
                cache: Optional[KVCache] = None, use_cache: bool = False,
                position_ids: Optional[torch.Tensor] = None) -> LMOutput:
        """Logits for every position of `input_ids` [B, T]. `attention_mask` [B, T(+cached)] (1 = token,
        0 = padding) is only needed for left padding; `cache` holds the keys/values of earlier calls.
        `position_ids` [B, T] (default: the next T positions) let left-padded rows start at position 0; given
        alone (no mask, no cache) they are packed documents, a new one at each 0 (data.document_mask): attention
        is then block-causal, a token sees the tokens of its own document only."""
        T = input_ids.shape[1]
        if use_cache and cache is None:
            cache = KVCache()
        past = len(cache) if cache is not None else 0
        if past + T > self.spec.block_size:
            raise ValueError(f"{past + T} positions exceed the model's {self.spec.block_size}")
        x = self.wte(input_ids)
        if self.wpe is not None:
            positions = torch.arange(past, past + T, device=input_ids.device) if position_ids is None else position_ids
            x = x + self.wpe(positions)
            if self.spec.dropout:
                x = F.dropout(x, self.spec.dropout, self.training)
        rope = None
        if self.wpe is None:
            # [T, 1, head_dim]: broadcast over the heads of [B, T, heads, head_dim]
            if position_ids is None:
                rope = self.cos[past:past + T, None].to(x.dtype), self.sin[past:past + T, None].to(x.dtype)
            else:  # [B, T, 1, head_dim]
                rope = self.cos[position_ids][:, :, None].to(x.dtype), self.sin[position_ids][:, :, None].to(x.dtype)
        packed = position_ids is not None and attention_mask is None and cache is None and not use_cache
        mask = documents_mask(position_ids) if packed else self.mask(attention_mask, past, T, x.device)
        for index, layer in enumerate(self.layers):
            x = layer(x, rope, mask, cache if use_cache else None, index)
        return LMOutput(self.lm_head(self.norm(x)), cache if use_cache else None)

    @staticmethod
    def mask(attention_mask: Optional[torch.Tensor], past: int, T: int, device) -> Optional[torch.Tensor]:
        """None when `is_causal` (or no mask at all) says it; else a boolean [B|1, 1, T, past+T] mask."""
        if attention_mask is not None and bool(attention_mask.all()):
            attention_mask = None
        if attention_mask is None and (past == 0 or T == 1):
            return None
        allowed = torch.ones(T, past + T, dtype=torch.bool, device=device).tril(past)[None, None]
        if attention_mask is not None:
            keys = attention_mask[:, -(past + T):].bool()[:, None, None, :]
            # A padding query would see no key at all (NaN): let every position see itself.
            diagonal = torch.arange(past + T, device=device) == torch.arange(past, past + T, device=device)[:, None]
            allowed = (allowed & keys) | diagonal
        return allowed

    def to_hf(self):
        """The stock `transformers` model of `self.config` (no remote code) with these weights: same logits."""
        import transformers

        # getattr: a transformers class by name
        hf_class = getattr(transformers, HF_CLASSES[self.spec.family])
        hf = hf_class._from_config(copy.deepcopy(self.config), attn_implementation="sdpa")
        hf.load_state_dict(hf_state_dict(self), strict=True)
        param = next(self.parameters())
        return hf.to(device=param.device, dtype=param.dtype).train(self.training)


def documents_mask(position_ids: torch.Tensor) -> torch.Tensor:
    """The boolean block-causal mask [B, 1, T, T] of packed documents, each starting where `position_ids` is 0."""
    T = position_ids.shape[1]
    document = (position_ids == 0).cumsum(dim=1)
    causal = torch.ones(T, T, dtype=torch.bool, device=position_ids.device).tril()
    return ((document[:, :, None] == document[:, None, :]) & causal)[:, None]


HF_CLASSES = {"gpt2": "GPT2LMHeadModel", "llama": "LlamaForCausalLM", "qwen3": "Qwen3ForCausalLM"}


def hf_state_dict(model: GPT) -> dict[str, torch.Tensor]:
    """`model`'s weights under the names and layouts of its `transformers` class (GPT-2's Conv1D
    stores [in, out]; absent biases are zeros)."""
    def conv1d(weight: torch.Tensor, bias: Optional[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        return weight.t(), bias if bias is not None else weight.new_zeros(weight.shape[0])

    state: dict[str, torch.Tensor] = {}
    spec = model.spec
    if spec.family == "gpt2":
        def layer_norm(name: str, module: nn.LayerNorm) -> None:
            state[f"{name}.weight"] = module.weight
            state[f"{name}.bias"] = module.bias if module.bias is not None else torch.zeros_like(module.weight)

        state["transformer.wte.weight"], state["transformer.wpe.weight"] = model.wte.weight, model.wpe.weight
        for i, layer in enumerate(model.layers):
            p = f"transformer.h.{i}."
            layer_norm(p + "ln_1", layer.norm1)
            layer_norm(p + "ln_2", layer.norm2)
            attn, mlp = layer.attn, layer.mlp
            for name, weight, bias in (("attn.c_attn", attn.qkv.flatten(0, 1), attn.qkv_bias),
                                       ("attn.c_proj", attn.o.weight, attn.o.bias),
                                       ("mlp.c_fc", mlp.fc.weight, mlp.fc.bias),
                                       ("mlp.c_proj", mlp.proj.weight, mlp.proj.bias)):
                state[p + name + ".weight"], state[p + name + ".bias"] = conv1d(weight, bias)
        layer_norm("transformer.ln_f", model.norm)
    else:
        state["model.embed_tokens.weight"], state["model.norm.weight"] = model.wte.weight, model.norm.weight
        for i, layer in enumerate(model.layers):
            p = f"model.layers.{i}."
            state[p + "input_layernorm.weight"] = layer.norm1.weight
            state[p + "post_attention_layernorm.weight"] = layer.norm2.weight
            attn, mlp = layer.attn, layer.mlp
            q, k, v = attn.qkv.flatten(0, 1).split([spec.n_embd, attn.kv_dim, attn.kv_dim])
            for name, weight in (("q", q), ("k", k), ("v", v), ("o", attn.o.weight)):
                state[f"{p}self_attn.{name}_proj.weight"] = weight
            if attn.q_norm is not None:
                state[p + "self_attn.q_norm.weight"] = attn.q_norm.weight
                state[p + "self_attn.k_norm.weight"] = attn.k_norm.weight
            for name, weight in (("gate", mlp.gate_up[0]), ("up", mlp.gate_up[1]), ("down", mlp.down.weight)):
                state[f"{p}mlp.{name}_proj.weight"] = weight
    state["lm_head.weight"] = model.lm_head.weight
    return {name: tensor.detach() for name, tensor in state.items()}
