"""The modern recipe (experiment=pretrain_modern: RoPE, RMSNorm, QK-norm, SwiGLU, Muon + AdamW, WSD)
against the GPT-2 recipe of the same size (experiment=pretrain_tiny: AdamW, WSD) at equal training time,
and against nanoGPT's tiny character recipe run by the minimal loop (benchmarks/minimal_gpt.py).

Both run the unchanged CLI for the same `trainer.max_time` (steps unbounded, so time ends both), on the
same corpus (the first stdlib files up to --mb MB; the BPE 4096 tokenizer and the packed corpus are
built once, before any timed run, in a shared cache), alternating (ABBA) over --repeats. Each run's
final weights (checkpoints/last.ckpt, saved when time runs out) are then scored by `lmforge eval` on the
held-out validation windows: bits per byte (`test/bpb`, comparable across tokenizers) and loss. The
medians and their difference are printed (> 0: the modern recipe is lower, i.e. better). Nothing is
asserted. Timings depend on the machine's load: compare the two sides, which share it.

`nanogpt-char` (one run per round, between the two): nanoGPT's README CPU recipe (4 layers, 4 heads,
width 128, context 64, batch 12, lr 1e-3 with 100 warmup steps and cosine to 1e-4 over 2,000 iterations,
beta2 0.99, no dropout) on the bytes of the same corpus, stopped by the same time limit if its 2,000
iterations take longer; its validation loss on 256 windows of the held-out bytes, in bits per byte.

    python benchmarks/modern_vs_gpt2.py                                   # 4 minutes each, 2 repeats
    python benchmarks/modern_vs_gpt2.py --time 00:00:01:30 --repeats 3 --modern optimizer.lr=0.03
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    byte_token_files,
    clean_up,
    lmforge_cmd,
    machine,
    median,
    run_checked,
    spread,
    stdlib_subset,
)

SEED = 42
RECIPES = {"gpt2": "pretrain_tiny", "modern": "pretrain_modern"}
NANOGPT_CHAR = ["--n-layer", "4", "--n-head", "4", "--n-embd", "128", "--block-size", "64", "--batch-size", "12",
                "--iters", "2000", "--lr", "1e-3", "--min-lr", "1e-4", "--beta2", "0.99", "--warmup", "100",
                "--eval-interval", "250", "--val-windows", "256"]


def train_and_score(recipe: str, args, corpus: Path, cache: Path, run_dir: Path, extra: list[str]) -> dict:
    """Train one recipe for --time, then eval its last checkpoint; return its figures."""
    wall = run_checked(lmforge_cmd() + [
        "train", f"experiment={RECIPES[recipe]}", f"data.paths=[{corpus}]", f"trainer.max_time={args.time}",
        "trainer.max_steps=1000000", "test=false", f"seed={SEED}", f"hydra.run.dir={run_dir}", *extra], cache)
    with open(run_dir / "csv" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    steps = max(int(r["step"]) for r in rows) + 1
    rates = [float(r["train/tokens_per_sec"]) for r in rows if r.get("train/tokens_per_sec")]
    run_checked(lmforge_cmd() + ["eval", f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}",
                                 f"hydra.run.dir={run_dir}-eval"], cache)  # beside the run: eval never writes into it
    scores = json.loads((run_dir.parent / f"{run_dir.name}-eval" / "metrics.json").read_text())
    return {"bpb": scores["test/bpb"], "loss": scores["test/loss"], "steps": steps,
            "tokens_per_sec": median(rates) if rates else float("nan"), "wall": wall}


def seconds(max_time: str) -> float:
    """Seconds of a Lightning max_time "DD:HH:MM:SS"."""
    days, hours, minutes, secs = (float(x) for x in max_time.split(":"))
    return ((days * 24 + hours) * 60 + minutes) * 60 + secs


def nanogpt_char(args, files: tuple, cache: Path, out: Path) -> dict:
    """nanoGPT's tiny character recipe in the minimal loop, on the bytes of the corpus, for at most --time."""
    train, val, vocab, bytes_per_token = files
    t0 = time.perf_counter()
    run_checked([sys.executable, str(Path(__file__).resolve().parent / "minimal_gpt.py"), "--train", str(train),
                 "--val", str(val), "--vocab-size", str(vocab), *NANOGPT_CHAR, "--seed", str(SEED),
                 "--max-seconds", str(seconds(args.time)), "--json", str(out)], cache)
    result = json.loads(out.read_text())
    return {"bpb": result["val_loss"] / math.log(2) / bytes_per_token, "loss": result["val_loss"],
            "steps": result["iters"], "tokens_per_sec": result["tokens_per_sec"], "wall": time.perf_counter() - t0}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--time", default="00:00:04:00", help="trainer.max_time of every run (default 4 minutes)")
    p.add_argument("--repeats", type=int, default=2, help="pairs of runs (default 2)")
    p.add_argument("--mb", type=float, default=8.0, help="MB of stdlib text in the corpus (default 8)")
    p.add_argument("--modern", nargs="*", default=[], help="extra overrides for the modern side")
    p.add_argument("--gpt2", nargs="*", default=[], help="extra overrides for the GPT-2 side")
    p.add_argument("--no-nanogpt", action="store_true", help="leave out nanoGPT's character recipe")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (runs, cache) and print it")
    args = p.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="lmforge-bench-modern-"))
    corpus, cache = tmp / "corpus", tmp / "cache"
    n_files, n_bytes = stdlib_subset(corpus, max_bytes=int(args.mb * 1e6))
    # Build the tokenizer once, outside the timed runs (both recipes share it and the packed corpus;
    # packing happens before the first run's training starts, which max_time does not count).
    run_checked(lmforge_cmd() + ["tokenizer", f"data.paths=[{corpus}]"], cache)
    byte_files = None if args.no_nanogpt else byte_token_files(corpus, cache, tmp, SEED)
    print(f"machine: {machine()}")
    print(f"corpus: {n_files} stdlib files, {n_bytes / 1e6:.2f} MB; max_time {args.time} per run; "
          f"overrides: modern {args.modern or 'none'}, gpt2 {args.gpt2 or 'none'}", flush=True)

    results: dict[str, list[dict]] = {"gpt2": [], "modern": [], **({} if args.no_nanogpt else {"nanogpt-char": []})}
    for i in range(args.repeats):
        order = ["gpt2", "nanogpt-char", "modern"] if i % 2 == 0 else ["modern", "nanogpt-char", "gpt2"]
        for recipe in (r for r in order if r in results):
            if recipe == "nanogpt-char":
                r = nanogpt_char(args, byte_files, cache, tmp / f"nanogpt-char-{i}.json")
            else:
                extra = args.modern if recipe == "modern" else args.gpt2
                r = train_and_score(recipe, args, corpus, cache, tmp / f"{recipe}-{i}", extra)
            results[recipe].append(r)
            print(f"[{i + 1}/{args.repeats}] {recipe:12s} val bpb {r['bpb']:.4f}  loss {r['loss']:.4f}  "
                  f"{r['steps']} steps  {r['tokens_per_sec']:,.0f} tokens/s  wall {r['wall']:.0f} s", flush=True)

    print()
    for recipe, rs in results.items():
        print(f"{recipe:12s} ({RECIPES.get(recipe, 'minimal_gpt.py')}): val bpb {spread([r['bpb'] for r in rs], 3)}, "
              f"steps {spread([r['steps'] for r in rs])}")
    for other in (r for r in results if r != "modern"):
        gap = median([r["bpb"] for r in results[other]]) - median([r["bpb"] for r in results["modern"]])
        pairs = [g["bpb"] - m["bpb"] for g, m in zip(results[other], results["modern"])]
        print(f"{other} - modern, median val bpb: {gap:+.4f} bits/byte "
              f"(rounds: {', '.join(f'{d:+.4f}' for d in pairs)})")
    clean_up(tmp, args.keep)


if __name__ == "__main__":
    main()
