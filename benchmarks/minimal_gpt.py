"""A minimal hand-written GPT training loop, nanoGPT-style: the baseline `train_vs_minimal.py` measures
`lmforge train` against. Self-contained on purpose (torch + numpy only, no lmforge import; the benchmarks'
clock, _clock.py, times it).

Model: token + learned position embeddings, pre-LayerNorm blocks (fused qkv, `scaled_dot_product_attention`,
GELU MLP of 4x width), final LayerNorm, head tied to the token embedding; N(0, 0.02) init with the output
projections scaled by 1/sqrt(2 n_layer). With --llama: RMSNorm, rotary positions instead of the position
table, a SwiGLU MLP of --hidden width and an untied head. Training: AdamW with weight decay on matrices (not on embeddings,
biases and norms, as lmforge does), linear warmup then cosine to --min-lr, gradient clipping at 1.0,
random windows of a packed uint16 token file (nanoGPT's `train.bin` format). With --out-dir, as nanoGPT's
train.py with its shakespeare_char config (always_save_checkpoint = False): after each validation that
lowers the loss, model and optimizer state saved to OUT_DIR/ckpt.pt (in the timed steps, as lmforge's are).

Speed is measured by benchmarks/_clock.py, the clock that times lmforge's side too: a stamp at the end of
each step, evaluation time left out; the rate is the tokens of steps 7..N over the time since the end of
step 6 (printed, and written to --json with the final validation loss and each validation's; --clock writes
the stamps).

    python benchmarks/minimal_gpt.py --train train.bin --val val.bin --vocab-size 258 --iters 2000
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _clock import StepClock  # noqa: E402

WARMUP_STEPS = 5  # left out of the rate (with the step whose end starts the timing)


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat((-x2, x1), dim=-1) * sin


class Block(nn.Module):
    """GPT-2: LayerNorm + GELU MLP; llama: RMSNorm + rotary positions + SwiGLU MLP of `hidden`."""

    def __init__(self, n_embd: int, n_head: int, bias: bool, llama: bool, hidden: int):
        super().__init__()
        self.n_head, self.llama = n_head, llama
        self.ln_1 = nn.RMSNorm(n_embd, eps=1e-6) if llama else nn.LayerNorm(n_embd, bias=bias)
        self.c_attn = nn.Linear(n_embd, 3 * n_embd, bias=bias)
        self.c_proj = nn.Linear(n_embd, n_embd, bias=bias)
        self.ln_2 = nn.RMSNorm(n_embd, eps=1e-6) if llama else nn.LayerNorm(n_embd, bias=bias)
        self.c_fc = nn.Linear(n_embd, hidden, bias=bias)
        self.c_gate = nn.Linear(n_embd, hidden, bias=False) if llama else None
        self.mlp_proj = nn.Linear(hidden, n_embd, bias=bias)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        if self.llama:
            q, k = rotate(q, cos, sin), rotate(k, cos, sin)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.c_proj(y.transpose(1, 2).reshape(B, T, C))
        h = self.ln_2(x)
        h = F.silu(self.c_gate(h)) * self.c_fc(h) if self.llama else F.gelu(self.c_fc(h))
        return x + self.mlp_proj(h)


class GPT(nn.Module):
    def __init__(self, vocab_size: int, block_size: int, n_layer: int, n_head: int, n_embd: int, bias: bool,
                 llama: bool = False, hidden: int = 0):
        super().__init__()
        self.llama = llama
        self.wte = nn.Embedding(vocab_size, n_embd)
        self.wpe = None if llama else nn.Embedding(block_size, n_embd)
        hidden = hidden or 4 * n_embd
        self.blocks = nn.ModuleList(Block(n_embd, n_head, bias, llama, hidden) for _ in range(n_layer))
        self.ln_f = nn.RMSNorm(n_embd, eps=1e-6) if llama else nn.LayerNorm(n_embd, bias=bias)
        self.lm_head = nn.Linear(n_embd, vocab_size, bias=False)
        if not llama:
            self.lm_head.weight = self.wte.weight
        head_dim = n_embd // n_head
        angles = torch.outer(torch.arange(block_size).float(),
                             10000.0 ** -(torch.arange(0, head_dim, 2).float() / head_dim)).repeat(1, 2)
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)
        for name, p in self.named_parameters():
            if p.ndim == 2:
                std = 0.02 / math.sqrt(2 * n_layer) if name.endswith(("c_proj.weight", "mlp_proj.weight")) else 0.02
                nn.init.normal_(p, std=std)
            elif name.endswith(".bias"):
                nn.init.zeros_(p)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        T = idx.shape[1]
        x = self.wte(idx) if self.llama else self.wte(idx) + self.wpe(torch.arange(T, device=idx.device))
        for block in self.blocks:
            x = block(x, self.cos[:T], self.sin[:T])
        return self.lm_head(self.ln_f(x))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train", required=True, help="uint16 token file (train)")
    p.add_argument("--val", required=True, help="uint16 token file (validation)")
    p.add_argument("--vocab-size", type=int, required=True)
    for name, default in [("n-layer", 4), ("n-head", 4), ("n-embd", 128), ("block-size", 64), ("batch-size", 12),
                          ("iters", 2000), ("warmup", 100), ("eval-interval", 100), ("val-windows", 64), ("seed", 42)]:
        p.add_argument(f"--{name}", type=int, default=default)
    for name, default in [("lr", 1e-3), ("min-lr", 1e-4), ("beta1", 0.9), ("beta2", 0.99), ("weight-decay", 0.1),
                          ("clip", 1.0)]:
        p.add_argument(f"--{name}", type=float, default=default)
    p.add_argument("--bias", action="store_true", help="biases in linears and LayerNorms")
    p.add_argument("--llama", action="store_true", help="Llama blocks: RMSNorm, rotary positions, SwiGLU, untied head")
    p.add_argument("--hidden", type=int, default=0, help="MLP width (default 4 x n_embd)")
    p.add_argument("--max-seconds", type=float, default=None,
                   help="also stop (after a last validation) once the loop has run this long, evaluations included")
    p.add_argument("--json", help="write {tokens_per_sec, val_loss, wall_s, iters, curve: [[step, val_loss]...]} here")
    p.add_argument("--clock", help="write the clock's stamps here (JSON: stamps, tokens)")
    p.add_argument("--out-dir", help="save ckpt.pt here when validation improves, as nanoGPT does")
    args = p.parse_args()

    t_start = time.perf_counter()
    torch.manual_seed(args.seed)
    train = np.memmap(args.train, dtype=np.uint16, mode="r")
    val = np.memmap(args.val, dtype=np.uint16, mode="r")
    T, B = args.block_size, args.batch_size
    stride = (len(val) - T - 1) // max(1, args.val_windows - 1)
    val_starts = [i * stride for i in range(args.val_windows)]

    def batch(data: np.ndarray, starts) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.stack([torch.from_numpy(data[i:i + T].astype(np.int64)) for i in starts])
        y = torch.stack([torch.from_numpy(data[i + 1:i + 1 + T].astype(np.int64)) for i in starts])
        return x, y

    model = GPT(args.vocab_size, T, args.n_layer, args.n_head, args.n_embd, args.bias, args.llama, args.hidden)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and not n.startswith(("wte", "wpe"))]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and not n.startswith(("wte", "wpe")))]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}],
                                  lr=args.lr, betas=(args.beta1, args.beta2))

    def lr_at(it: int) -> float:
        if it < args.warmup:
            return args.lr * (it + 1) / args.warmup
        progress = min(1.0, (it - args.warmup) / max(1, args.iters - args.warmup))
        return args.min_lr + 0.5 * (1 + math.cos(math.pi * progress)) * (args.lr - args.min_lr)

    @torch.no_grad()
    def val_loss() -> float:
        model.eval()
        total = 0.0
        for i in range(0, len(val_starts), B):
            x, y = batch(val, val_starts[i:i + B])
            total += F.cross_entropy(model(x).flatten(0, 1), y.flatten(), reduction="sum").item()
        model.train()
        return total / (len(val_starts) * T)

    clock = StepClock()
    if args.clock:
        clock.announce(args.clock)
    loss_value, best_val, curve = float("nan"), float("inf"), []
    loop_start = time.perf_counter()
    for it in range(args.iters):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(it)
        x, y = batch(train, torch.randint(len(train) - T - 1, (B,)).tolist())
        loss = F.cross_entropy(model(x).flatten(0, 1).float(), y.flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        clock.step(B * T)
        if (it + 1) % 10 == 0:
            loss_value = loss.item()  # a host sync, as a logger's read of the loss every 10 steps
        out_of_time = args.max_seconds is not None and time.perf_counter() - loop_start >= args.max_seconds
        if (it + 1) % args.eval_interval == 0 or it + 1 == args.iters or out_of_time:
            clock.pause()
            last_val = val_loss()
            clock.resume()
            curve.append([it + 1, last_val])
            if args.out_dir and last_val < best_val:
                best_val = last_val
                torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "iter_num": it + 1,
                            "best_val_loss": best_val, "config": vars(args)}, Path(args.out_dir) / "ckpt.pt")
            print(f"step {it + 1}: train loss {loss_value:.4f}, val loss {last_val:.4f}", flush=True)
        if out_of_time:
            break
    if args.clock:
        clock.save(args.clock)
    result = {"tokens_per_sec": clock.rate(WARMUP_STEPS), "val_loss": last_val,
              "wall_s": time.perf_counter() - t_start, "iters": it + 1, "curve": curve}
    print(json.dumps(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f)


if __name__ == "__main__":
    main()
