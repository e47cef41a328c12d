"""A training step of a grouped-query-attention model on CPU with attention as batched matmuls
(`lmforge.models.cpu_kernels.causal_attention_bmm`, the default up to 128 positions) against
`scaled_dot_product_attention`'s fused kernel (the path switched off by setting
`cpu_kernels.BMM_ATTENTION_MAX_T = 0`).

Both sides are the same native Llama model (llama_tiny: 4 layers, 4 query heads on 2 key heads, width
128; context 64, batch 12 by default), one fused AdamW, clipping at 1.0, random tokens; in one process,
alternating chunks of steps (ABBA order), so both meet the same spells of the machine. Prints the median
ms a step of each side and their ratio (> 1: the batched matmuls are faster). Nothing is asserted.

    python benchmarks/gqa_attention.py                        # llama_tiny's shape
    python benchmarks/gqa_attention.py --kv-heads 1 --block-size 128 --rounds 12
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from lmforge.models import cpu_kernels
from lmforge.models.causal_lm import llama


def training_step(args: argparse.Namespace):
    """One optimizer step of the model on a fixed random batch, as a closure."""
    torch.manual_seed(0)
    model = llama(vocab_size=256, block_size=args.block_size, n_layer=args.layers, n_head=args.heads,
                  n_kv_head=args.kv_heads, n_embd=args.width)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
    x, y = (torch.randint(0, 256, (args.batch_size, args.block_size)) for _ in range(2))

    def step() -> None:
        logits = model(x).logits
        torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten()).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return step


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--kv-heads", type=int, default=2)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--block-size", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=12)
    p.add_argument("--rounds", type=int, default=24, help="chunks per side (default 24)")
    p.add_argument("--steps", type=int, default=15, help="steps per chunk (default 15)")
    args = p.parse_args()
    step, default_max_t = training_step(args), cpu_kernels.BMM_ATTENTION_MAX_T
    for _ in range(10):
        step()
    ms: dict[str, list[float]] = {"bmm": [], "fused": []}
    for r in range(args.rounds):
        for side in (("bmm", "fused") if r % 2 == 0 else ("fused", "bmm")):
            cpu_kernels.BMM_ATTENTION_MAX_T = default_max_t if side == "bmm" else 0
            step()  # the first step after a switch is not timed
            start = time.perf_counter()
            for _ in range(args.steps):
                step()
            ms[side].append((time.perf_counter() - start) / args.steps * 1e3)
    bmm, fused = statistics.median(ms["bmm"]), statistics.median(ms["fused"])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.layers} layers, {args.heads} "
          f"query heads on {args.kv_heads} key heads, width {args.width}, context {args.block_size}, batch "
          f"{args.batch_size}; {args.rounds} chunks of {args.steps} steps a side")
    print(f"ms a step: batched matmuls {bmm:.2f}, fused kernel {fused:.2f}; ratio fused/bmm {fused / bmm:.3f}")


if __name__ == "__main__":
    main()
