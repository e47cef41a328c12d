"""What `data.document_mask=true` costs and gives: training tokens/s with and without the block-causal
mask (a token sees its own document only, positions restarting at each), and the validation loss of
both after the same number of steps.

A corpus of short documents (every function and method of some stdlib packages, one JSONL document
each: ~0.8 KB, so that most windows hold a boundary) is packed with the bytes tokenizer; two
identical native models (same init, same stream of windows from `TextDataModule`) train side by side in
one process, in alternating chunks of steps (ABBA order, so both meet the same spells of the machine).
Prints tokens/s of each (median over chunks), their ratio (masked / plain: < 1 is the mask's cost),
and each model's validation loss at equal steps (each evaluated the way it trains). Nothing is asserted.

    python benchmarks/document_mask.py                                    # gpt2 4x4x128, context 256
    python benchmarks/document_mask.py --model llama --rounds 12 --steps 20
"""

from __future__ import annotations

import argparse
import ast
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from _common import machine

from lmforge.data.corpus import stdlib_dir
from lmforge.data.text import TextDataModule
from lmforge.models import causal_lm
from lmforge.modules.causal_lm import lm_loss
from lmforge.tokenizers import Bytes

PACKAGES = ("json", "email", "http", "logging", "unittest", "importlib", "asyncio", "xml")


def documents(out: Path) -> tuple[int, float]:
    """Every function and method of PACKAGES' modules as one JSONL document; (count, mean bytes)."""
    sizes = []
    with open(out, "w") as f:
        for package in PACKAGES:
            for path in sorted((stdlib_dir() / package).rglob("*.py")):
                text = path.read_text()
                lines = text.splitlines(keepends=True)
                for node in ast.parse(text).body:
                    # a function, or each method of a class: short documents, most windows hold a boundary
                    defs = node.body if isinstance(node, ast.ClassDef) else [node]
                    for item in defs:
                        if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                            doc = "".join(lines[item.lineno - 1:item.end_lineno])
                            f.write(json.dumps({"text": doc}) + "\n")
                            sizes.append(len(doc.encode()))
    return len(sizes), statistics.mean(sizes)


def side(args: argparse.Namespace, corpus: Path, cache: Path, mask: bool):
    """(datamodule, model, optimizer, batches) of one side, the model built from the same seed."""
    dm = TextDataModule(paths=[str(corpus)], tokenizer=Bytes(), cache_dir=str(cache), block_size=args.block_size,
                        batch_size=args.batch_size, val_windows=args.val_windows, document_mask=mask, seed=0)
    dm.prepare_data()
    dm.setup()
    torch.manual_seed(0)
    model = getattr(causal_lm, args.model)(vocab_size=len(dm.tokenizer), block_size=args.block_size,
                                           n_layer=args.layers, n_head=args.heads, n_embd=args.width)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, fused=True)
    return dm, model, optimizer, iter(dm.train_dataloader())


def loss_of(model, batch: dict) -> torch.Tensor:
    return lm_loss(model(batch["input_ids"], position_ids=batch.get("position_ids")).logits, batch["labels"])


def train(model, optimizer, batches, steps: int) -> float:
    """Seconds for `steps` optimizer steps (data loading included)."""
    start = time.perf_counter()
    for _ in range(steps):
        loss_of(model, next(batches)).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - start


@torch.no_grad()
def validate(dm: TextDataModule, model) -> float:
    model.eval()
    losses = [loss_of(model, batch).item() for batch in dm.val_dataloader()]
    model.train()
    return statistics.mean(losses)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="gpt2", choices=("gpt2", "llama", "modern"))
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--block-size", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--val-windows", type=int, default=64)
    p.add_argument("--rounds", type=int, default=8, help="chunks per side (default 8)")
    p.add_argument("--steps", type=int, default=10, help="steps per chunk (default 10)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "definitions.jsonl"
        count, mean_bytes = documents(corpus)
        sides = {"plain": side(args, corpus, Path(tmp) / "cache", False),
                 "masked": side(args, corpus, Path(tmp) / "cache", True)}
        for _, model, optimizer, batches in sides.values():
            train(model, optimizer, batches, 3)  # warm-up, the same steps for both
        seconds: dict[str, list[float]] = {name: [] for name in sides}
        for r in range(args.rounds):
            for name in (("plain", "masked") if r % 2 == 0 else ("masked", "plain")):
                _, model, optimizer, batches = sides[name]
                seconds[name].append(train(model, optimizer, batches, args.steps))
        tokens = args.steps * args.batch_size * args.block_size
        rates = {name: [tokens / s for s in secs] for name, secs in seconds.items()}
        val = {name: validate(dm, model) for name, (dm, model, _, _) in sides.items()}
    steps = 3 + args.rounds * args.steps
    print(f"machine: {machine()}")
    print(f"corpus: {count:,} documents (functions and methods of {', '.join(PACKAGES)}), mean {mean_bytes:,.0f} "
          f"bytes; bytes tokenizer; {args.model} {args.layers}x{args.heads}x{args.width}, context {args.block_size}, "
          f"batch {args.batch_size}, {steps} steps each")
    for name in sides:
        print(f"{name:>6}: {statistics.median(rates[name]):,.0f} tokens/s (median of {args.rounds} chunks, "
              f"min {min(rates[name]):,.0f}, max {max(rates[name]):,.0f}); val loss {val[name]:.4f} at step {steps}")
    ratio = statistics.median(rates["masked"]) / statistics.median(rates["plain"])
    paired = statistics.median(m / p for m, p in zip(rates["masked"], rates["plain"]))
    print(f"masked / plain tokens/s: {ratio:.3f} (ratio of medians; median of the paired chunks' ratios "
          f"{paired:.3f}); val loss masked - plain: {val['masked'] - val['plain']:+.4f}")


if __name__ == "__main__":
    main()
