"""Training speed of `lmforge train` against a hand-written PyTorch loop: the toolkit's overhead.

Both sides train the same thing: the gpt2_tiny shape (4 layers, 4 heads, n_embd 128, tied head) with
random weights from the same seed, AdamW (lr 2e-3, betas (0.9, 0.95), weight decay 0.1 on matrices
only), the cosine-warmup schedule, gradient clipping at 1.0 (pretrain_tiny's settings), on the
same packed corpus and the same training windows (the first stdlib files copied into a temp dir,
a BPE of 4096 tokens, all tokenized once before timing: the cache is shared).

Both sides are timed by the same clock, outside the code under test (benchmarks/_clock.py): a
perf_counter stamp with the step's token count at the end of every training step, validation time left
out; the rate is the tokens of steps W+2..N over the time from the end of step W+1 to the end of step N
(start-up, sanity validation and the first W+1 steps excluded), computed by this script from the stamps.

* lmforge side: the real CLI in a subprocess,
  `lmforge train trainer.max_steps=N data.paths=[DIR] data.batch_size=B model.block_size=T
  'callbacks=[default,throughput]' logger=csv test=false ...`, i.e. pretrain_tiny with its default
  callbacks (checkpointing, LR monitor, rich progress bar, model summary, tokens/s), the CSV logger and
  Lightning's logging every 10 steps, plus the clock as one more callback
  (`+callbacks.step_clock._target_=_clock.lightning_clock`, called at `on_train_batch_end`).
* plain side: in this process, the same `TrainWindows` dataset in a bare DataLoader, the same HF
  model class, `lm_loss`, and a loop of forward / backward / clip / step / zero_grad / sched.step,
  with the clock's `step()` called after each of its steps.

The two sides alternate (lmforge, plain, lmforge, plain, ...); medians over repeats and their ratio
are printed (ratio < 1: lmforge is slower). Only numbers are printed, nothing is asserted.

    python benchmarks/train_overhead.py                       # defaults: 3 repeats of 20 steps
    python benchmarks/train_overhead.py --repeats 5 --steps 40 --batch-size 16 --block-size 256
    python benchmarks/train_overhead.py --callbacks none +trainer.enable_progress_bar=false  # lean
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _clock import StepClock  # noqa: E402
from _common import clean_up, lmforge_cmd, machine, median, run_checked, spread, stdlib_subset  # noqa: E402

LR, BETAS, WEIGHT_DECAY, CLIP, WARMUP_LR, MIN_LR_RATIO = 2e-3, (0.9, 0.95), 0.1, 1.0, 50, 0.1
SEED = 42


def lmforge_run(args, corpus: Path, cache: Path, run_dir: Path) -> tuple[float, float]:
    """Run the CLI with the benchmark's clock; return (tokens/s after warm-up, total wall seconds)."""
    stamps_file = run_dir.parent / f"{run_dir.name}-clock.json"
    cmd = lmforge_cmd() + [
        "train",
        f"data.paths=[{corpus}]",
        f"data.batch_size={args.batch_size}",
        f"model.block_size={args.block_size}",
        f"trainer.max_steps={args.steps}",
        "trainer.max_time=null",
        f"trainer.log_every_n_steps={args.log_every}",
        f"callbacks={args.callbacks}",
        "+callbacks.step_clock._target_=_clock.lightning_clock",
        f"+callbacks.step_clock.path={stamps_file}",
        "logger=csv",
        "test=false",
        f"seed={SEED}",
        f"hydra.run.dir={run_dir}",
        *args.override,
    ]
    wall = run_checked(cmd, cache)
    clock = StepClock.load(stamps_file)
    if len(clock.stamps) != args.steps:
        print(f"  note: {len(clock.stamps)} steps timed, not {args.steps}", flush=True)
    return clock.rate(args.warmup), wall


def prepare(corpus: Path, cache: Path, args):
    """Tokenize + pack the corpus into `cache` (what the CLI will reuse); return the datamodule."""
    from lmforge.data.text import TextDataModule
    from lmforge.tokenizers import BPE

    dm = TextDataModule(paths=[str(corpus)], block_size=args.block_size, batch_size=args.batch_size,
                        tokenizer=BPE(4096), cache_dir=str(cache),
                        seed=SEED)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def plain_run(args, dm) -> float:
    """The hand-written loop; returns tokens/s over steps warmup+2..steps, by the same clock."""
    import torch
    from torch.utils.data import DataLoader

    from lmforge.models.causal_lm import gpt2
    from lmforge.modules.causal_lm import lm_loss

    torch.manual_seed(SEED)
    model = gpt2(vocab_size=len(dm.tokenizer), block_size=args.block_size, n_layer=4, n_head=4, n_embd=128,
                 dropout=0.0, bias=True, tie_word_embeddings=True)
    model.train()
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2 and id(p) not in embeddings]
    no_decay = [p for p in params if not (p.ndim >= 2 and id(p) not in embeddings)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": WEIGHT_DECAY},
                             {"params": no_decay, "weight_decay": 0.0}], lr=LR, betas=BETAS)

    def factor(step: int) -> float:  # pretrain_tiny's cosine warmup over `steps`
        if step < WARMUP_LR:
            return (step + 1) / WARMUP_LR
        progress = min(1.0, (step - WARMUP_LR) / max(1, args.steps - WARMUP_LR))
        return MIN_LR_RATIO + (1 - MIN_LR_RATIO) * 0.5 * (1 + math.cos(math.pi * progress))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    # The same windows as lmforge's stream from step 0: sample indices 0, 1, 2, ...
    loader = DataLoader(dm.train_dataset, batch_size=args.batch_size, sampler=range(args.steps * args.batch_size))
    clock = StepClock()
    for batch in loader:
        loss = lm_loss(model(input_ids=batch["input_ids"], use_cache=False).logits, batch["labels"])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
        opt.step()
        opt.zero_grad(set_to_none=True)
        sched.step()
        clock.step(batch["input_ids"].numel())
    return clock.rate(args.warmup)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3, help="A/B pairs (default 3)")
    p.add_argument("--steps", type=int, default=20, help="optimizer steps per run (default 20)")
    p.add_argument("--warmup", type=int, default=5, help="first steps left out of the rate (default 5)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--block-size", type=int, default=128)
    p.add_argument("--files", type=int, default=100, help="stdlib files in the corpus (default 100)")
    p.add_argument("--log-every", type=int, default=10, help="trainer.log_every_n_steps of the lmforge side")
    p.add_argument("--callbacks", default="[default,throughput]",
                   help="the lmforge side's callbacks (default [default,throughput]; the clock is added to them)")
    p.add_argument("override", nargs="*", help="extra Hydra overrides for the lmforge side, e.g. "
                   "+trainer.enable_progress_bar=false")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (runs, cache) and print it")
    args = p.parse_args()
    if args.steps - args.warmup < 3:
        sys.exit("--steps must exceed --warmup by at least 3")

    tmp = Path(tempfile.mkdtemp(prefix="lmforge-bench-train-"))
    corpus, cache = tmp / "corpus", tmp / "cache"
    n_files, n_bytes = stdlib_subset(corpus, max_files=args.files)
    t0 = time.perf_counter()
    dm = prepare(corpus, cache, args)
    print(f"machine: {machine()}")
    print(f"corpus: {n_files} stdlib files, {n_bytes / 1e6:.2f} MB, {dm.meta['train_tokens']:,} train tokens "
          f"(BPE 4096, prepared in {time.perf_counter() - t0:.1f} s, cache {cache})")
    print(f"setup: gpt2_tiny shape, batch {args.batch_size} x block {args.block_size} = "
          f"{args.batch_size * args.block_size} tokens/step, {args.steps} steps, rate over steps "
          f"{args.warmup + 2}..{args.steps}, {args.repeats} interleaved repeats", flush=True)

    lm_rates, plain_rates, walls = [], [], []
    for i in range(args.repeats):
        rate, wall = lmforge_run(args, corpus, cache, tmp / f"run{i}")
        lm_rates.append(rate)
        walls.append(wall)
        print(f"[{i + 1}/{args.repeats}] lmforge train: {rate:8,.0f} tokens/s  (process wall {wall:.1f} s)", flush=True)
        t0 = time.perf_counter()
        rate = plain_run(args, dm)
        plain_rates.append(rate)
        print(f"[{i + 1}/{args.repeats}] plain loop:    {rate:8,.0f} tokens/s  (loop wall {time.perf_counter() - t0:.1f} s)",
              flush=True)

    ratios = [a / b for a, b in zip(lm_rates, plain_rates)]
    print()
    print(f"lmforge train tokens/s: {spread(lm_rates)}")
    print(f"plain loop tokens/s:    {spread(plain_rates)}")
    print(f"ratio of medians lmforge/plain: {median(lm_rates) / median(plain_rates):.3f}   "
          f"median of per-pair ratios: {median(ratios):.3f} (pairs: {', '.join(f'{r:.3f}' for r in ratios)})")
    step_lm = args.batch_size * args.block_size / median(lm_rates) * 1e3
    step_plain = args.batch_size * args.block_size / median(plain_rates) * 1e3
    print(f"per step: lmforge {step_lm:.1f} ms, plain {step_plain:.1f} ms, difference {step_lm - step_plain:+.1f} ms")
    print(f"lmforge process wall (start-up + {args.steps} steps + checkpoint): {spread(walls)} s")
    clean_up(tmp, args.keep)


if __name__ == "__main__":
    main()
