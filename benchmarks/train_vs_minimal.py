"""Training speed of `lmforge train` against a minimal hand-written GPT loop (benchmarks/minimal_gpt.py,
nanoGPT-style) of the same shape, on the same packed text: does the toolkit cost speed?

Both sides run as fresh subprocesses on the same byte-tokenized corpus (the first stdlib files up to
--mb MB, tokenized once into a shared cache; the minimal loop reads the same train/val tokens as uint16
files), with the same shape, batch, AdamW (lr 1e-3, betas (0.9, 0.99), weight decay 0.1 on matrices),
warmup + cosine to lr/10, clipping at 1.0, and validation every 100 steps (and at the last) on 64 fixed
windows, each followed by checkpoints (lmforge: best.ckpt and last.ckpt; minimal: nanoGPT's ckpt.pt when
the loss improved). AdamW runs as each side's default kernel: lmforge's preset asks for the fused one
(`optimizer.fused=true`), the minimal loop uses torch's default (foreach), as nanoGPT does on a CPU.

* lmforge: the unchanged CLI with pretrain_tiny's default callbacks (checkpoints, LR monitor, rich
  progress bar, model summary, throughput, text samples) and the CSV logger:
  `lmforge train experiment=pretrain_tiny tokenizer=bytes model=gpt2_tiny|llama_tiny model.block_size=T
  model.n_layer=L model.n_head=H model.n_embd=C [model.bias=false] data.batch_size=B optimizer.lr=1e-3
  optimizer.betas=[0.9,0.99] scheduler=cosine_warmup scheduler.warmup_steps=100 trainer.max_steps=N
  trainer.max_time=null test=false` (llama: model.n_kv_head=null, as the minimal loop has no GQA), plus
  the benchmarks' clock as one more callback (`+callbacks.step_clock._target_=_clock.lightning_clock`).
* minimal: `python benchmarks/minimal_gpt.py ...` (with `--llama` against a llama preset: RMSNorm, rotary
  positions, SwiGLU of the same width, untied head), calling the same clock after each of its steps.

Both sides are timed by that one clock (benchmarks/_clock.py), outside the code under test: a stamp at
the end of each training step, validation left out; this script computes each rate from the stamps (the
tokens of steps 7..N over the time since the end of step 6), the same way for both.

Shapes: `tiny` = nanoGPT's CPU recipe (4 layers, 4 heads, width 128, context 64, batch 12; 2,000 steps
in the issue, fewer by default here) and `small` = nanoGPT's 10.7M shape (6 x 6 x 384, context 256,
batch 8); `overhead` (1 layer, width 16, context 8, batch 1, --steps-tiny steps) has next to no compute,
so its step time is what each loop costs per step around the math.

Time-sliced pairs (default): this VM switches between slow and fast spells (the same loop runs at 34 or
44 ms a step, for tens of seconds at a time), so runs one after the other compare spells more than code
(pairs from 0.79 to 1.28 in 10 ABBA rounds). Each repeat therefore starts both sides together; each runs
until its clock announces training, then the two take turns of --slice seconds, the other one stopped
(SIGSTOP/SIGCONT), and the clock leaves the stopped intervals out: both sides' timed steps fall in the
same minute, in slices of one second. Pair ratios then agree within ~1 %. `--slice 0` runs the sides one
after the other (ABBA order). Medians over repeats and their ratio are printed (> 1: lmforge is faster),
with the milliseconds per step. Only numbers are printed, nothing is asserted.

    python benchmarks/train_vs_minimal.py                                  # tiny and small, gpt2 and llama
    python benchmarks/train_vs_minimal.py --shapes tiny --models gpt2_tiny --steps-tiny 2000 --repeats 5
    python benchmarks/train_vs_minimal.py --shapes tiny compile=true      # extra overrides for lmforge
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _clock import StepClock  # noqa: E402
from _common import (  # noqa: E402
    bench_env,
    byte_token_files,
    clean_up,
    lmforge_cmd,
    machine,
    median,
    run_checked,
    spread,
    stdlib_subset,
)

HERE = Path(__file__).resolve().parent
SEED = 42
WARMUP_STEPS = 5  # left out of the rate, on both sides (as minimal_gpt.py's own figure does)
# name: (n_layer, n_head, n_embd, block_size, batch_size)
# "overhead": next to no compute, so a step's time is each side's per-step cost outside the model's math.
SHAPES = {"tiny": (4, 4, 128, 64, 12), "small": (6, 6, 384, 256, 8), "overhead": (1, 1, 16, 8, 1)}
TRAINING = {"lr": 1e-3, "beta2": 0.99, "warmup": 100, "eval_interval": 100, "val_windows": 64}


def lmforge_side(model: str, shape: tuple, steps: int, corpus: Path, run_dir: Path,
                 extra: list[str]) -> tuple[list[str], Path, Callable[[], float]]:
    """(command, clock file, final val/loss reader) of one `lmforge train`."""
    n_layer, n_head, n_embd, block, batch = shape
    stamps_file = run_dir.parent / f"{run_dir.name}-clock.json"
    cmd = lmforge_cmd() + [
        "train", "experiment=pretrain_tiny", "tokenizer=bytes", f"model={model}", f"data.paths=[{corpus}]",
        f"model.block_size={block}", f"model.n_layer={n_layer}", f"model.n_head={n_head}", f"model.n_embd={n_embd}",
        f"data.batch_size={batch}", f"data.val_windows={TRAINING['val_windows']}", f"optimizer.lr={TRAINING['lr']}",
        f"optimizer.betas=[0.9,{TRAINING['beta2']}]", "optimizer.weight_decay=0.1", "scheduler=cosine_warmup",
        f"scheduler.warmup_steps={TRAINING['warmup']}", "scheduler.min_lr_ratio=0.1", f"trainer.max_steps={steps}",
        "trainer.max_time=null", f"trainer.val_check_interval={min(steps, TRAINING['eval_interval'])}", "test=false",
        f"seed={SEED}", f"hydra.run.dir={run_dir}", *(["model.bias=false"] if model.startswith("gpt2") else []),
        *(["model.n_kv_head=null"] if model.startswith("llama") else []),
        "+callbacks.step_clock._target_=_clock.lightning_clock", f"+callbacks.step_clock.path={stamps_file}", *extra,
    ]

    def val_loss() -> float:
        rows = list(csv.DictReader(open(run_dir / "csv" / "metrics.csv")))
        val = [float(r["val/loss"]) for r in rows if r.get("val/loss")]
        return val[-1] if val else float("nan")

    return cmd, stamps_file, val_loss


def minimal_side(model: str, shape: tuple, steps: int, train: Path, val: Path, vocab: int,
                 out_dir: Path) -> tuple[list[str], Path, Callable[[], float]]:
    """(command, clock file, final val loss reader) of one minimal_gpt.py run (Llama blocks, with the
    SwiGLU width of lmforge's llama presets, for a llama model)."""
    n_layer, n_head, n_embd, block, batch = shape
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / "minimal.json"
    llama = ["--llama", "--hidden", str(-(-8 * n_embd // 3 // 64) * 64)] if model.startswith("llama") else []
    cmd = [sys.executable, str(HERE / "minimal_gpt.py"), "--train", str(train), "--val", str(val),
           "--vocab-size", str(vocab), "--n-layer", str(n_layer), "--n-head", str(n_head), "--n-embd", str(n_embd),
           "--block-size", str(block), "--batch-size", str(batch), "--iters", str(steps), "--lr", str(TRAINING["lr"]),
           "--min-lr", str(TRAINING["lr"] / 10), "--beta2", str(TRAINING["beta2"]), "--warmup", str(TRAINING["warmup"]),
           "--eval-interval", str(min(steps, TRAINING["eval_interval"])), "--val-windows", str(TRAINING["val_windows"]),
           "--seed", str(SEED), "--json", str(out), "--clock", str(out.with_suffix(".clock.json")),
           "--out-dir", str(out_dir), *llama]
    return cmd, out.with_suffix(".clock.json"), lambda: json.loads(out.read_text())["val_loss"]


def run_sliced(cmds: dict[str, list[str]], clocks: dict[str, Path], cache: Path,
               slice_s: float) -> dict[str, list[tuple[float, float]]]:
    """Run the commands together, one at a time: each runs until its clock announces training, then
    waits (SIGSTOP) for the others; then they take turns of `slice_s` seconds, the others stopped, until
    one ends (the rest finish alone). Both sides so meet this VM's slow and fast spells alike. Returns the
    intervals each process was kept stopped, for `StepClock.rate`."""
    logs = {name: open(clocks[name].with_suffix(".log"), "w") for name in cmds}
    procs = {name: subprocess.Popen(cmd, env=bench_env(cache), stdout=logs[name], stderr=subprocess.STDOUT,
                                    start_new_session=True) for name, cmd in cmds.items()}
    stopped: dict[str, list[tuple[float, float]]] = {name: [] for name in cmds}
    since: dict[str, float] = {}

    def stop(name: str) -> None:
        os.killpg(procs[name].pid, signal.SIGSTOP)
        since[name] = time.perf_counter()

    def cont(name: str) -> None:
        os.killpg(procs[name].pid, signal.SIGCONT)
        stopped[name].append((since.pop(name), time.perf_counter()))

    def waiting(name: str) -> bool:  # neither announced training yet nor ended
        return procs[name].poll() is None and not Path(f"{clocks[name]}.ready").exists()

    try:
        while any(waiting(name) for name in cmds):  # start-up, not timed
            for name in cmds:
                if name not in since and not waiting(name) and procs[name].poll() is None:
                    stop(name)
            time.sleep(0.02)
        for name in cmds:
            if name not in since and procs[name].poll() is None:
                stop(name)
        names, turn = list(cmds), 0
        while any(procs[name].poll() is None for name in names):
            name = names[turn % len(names)]
            turn += 1
            if procs[name].poll() is not None:
                continue
            cont(name)
            deadline = time.perf_counter() + slice_s
            alone = all(procs[other].poll() is not None for other in names if other != name)
            while (alone or time.perf_counter() < deadline) and procs[name].poll() is None:
                time.sleep(0.005)
            if procs[name].poll() is None:
                stop(name)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGCONT)
        for name, proc in procs.items():
            proc.wait()
            logs[name].close()
    for name, proc in procs.items():
        if proc.returncode:
            sys.exit(f"{name} failed ({proc.returncode}):\n{clocks[name].with_suffix('.log').read_text()[-3000:]}")
    return stopped


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shapes", nargs="+", default=["tiny", "small"], choices=list(SHAPES))
    p.add_argument("--models", nargs="+", default=["gpt2_tiny", "llama_tiny"],
                   help="lmforge model presets to compare with the minimal GPT (default gpt2_tiny llama_tiny)")
    p.add_argument("--repeats", type=int, default=3, help="A/B pairs per (shape, model) (default 3)")
    p.add_argument("--steps-tiny", type=int, default=600, help="optimizer steps at the tiny shape (default 600)")
    p.add_argument("--steps-small", type=int, default=100, help="optimizer steps at the small shape (default 100)")
    p.add_argument("--mb", type=float, default=1.0, help="MB of stdlib text in the corpus (default 1)")
    p.add_argument("override", nargs="*", help="extra Hydra overrides for the lmforge side, e.g. compile=true")
    p.add_argument("--slice", type=float, default=1.0,
                   help="seconds each side runs while the other is stopped (default 1); 0: one after the other")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (runs, cache) and print it")
    args = p.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="lmforge-bench-minimal-"))
    corpus, cache = tmp / "corpus", tmp / "cache"
    n_files, n_bytes = stdlib_subset(corpus, max_bytes=int(args.mb * 1e6))
    train, val, vocab, _ = byte_token_files(corpus, cache, tmp, SEED)
    print(f"machine: {machine()}")
    print(f"corpus: {n_files} stdlib files, {n_bytes / 1e6:.2f} MB, bytes tokenizer ({vocab} ids), "
          f"{train.stat().st_size // 2:,} train tokens; lmforge overrides: {args.override or 'none'}", flush=True)

    summary = []
    for shape_name in args.shapes:
        shape = SHAPES[shape_name]
        steps = args.steps_small if shape_name == "small" else args.steps_tiny
        for model in args.models:
            lm, mini, lm_val, mini_val, walls = [], [], [], [], []
            minimal = "Llama" if model.startswith("llama") else "GPT"
            print(f"\n{shape_name} {'x'.join(map(str, shape[:3]))}, context {shape[3]}, batch {shape[4]}, "
                  f"{steps} steps: lmforge model={model} vs minimal {minimal}", flush=True)
            for i in range(args.repeats):
                sides = {"lmforge": lmforge_side(model, shape, steps, corpus, tmp / f"run-{shape_name}-{model}-{i}",
                                                 args.override),
                         "minimal": minimal_side(model, shape, steps, train, val, vocab, tmp / f"minimal-{i}")}
                order = ["lmforge", "minimal"] if i % 2 == 0 else ["minimal", "lmforge"]
                t0 = time.perf_counter()
                if args.slice > 0:
                    stopped = run_sliced({n: sides[n][0] for n in order}, {n: sides[n][1] for n in order}, cache,
                                         args.slice)
                else:
                    for name in order:
                        run_checked(sides[name][0], cache)
                    stopped = {name: [] for name in order}
                walls.append(time.perf_counter() - t0)
                rates = {name: StepClock.load(sides[name][1]).rate(WARMUP_STEPS, stopped[name]) for name in order}
                lm.append(rates["lmforge"]), mini.append(rates["minimal"])
                lm_val.append(sides["lmforge"][2]()), mini_val.append(sides["minimal"][2]())
                print(f"  [{i + 1}/{args.repeats}] lmforge {lm[-1]:9,.0f}  minimal {mini[-1]:9,.0f} tokens/s  "
                      f"ratio {lm[-1] / mini[-1]:.3f}   val loss {lm_val[-1]:.3f} / {mini_val[-1]:.3f}  "
                      f"wall {walls[-1]:.1f} s", flush=True)
            ratio = median(lm) / median(mini)
            print(f"  lmforge tokens/s: {spread(lm)}")
            print(f"  minimal tokens/s: {spread(mini)}")
            pairs = [x / y for x, y in zip(lm, mini)]  # a pair ran together: same machine spells
            print(f"  ratio of medians lmforge/minimal: {ratio:.3f}   median pair ratio {median(pairs):.3f} "
                  f"(min {min(pairs):.3f}, max {max(pairs):.3f})")
            print(f"  val loss lmforge {median(lm_val):.3f} vs minimal {median(mini_val):.3f}   "
                  f"wall of a pair {median(walls):.1f} s")
            summary.append((shape_name, model, median(lm), median(mini), ratio, shape[3] * shape[4]))

    print("\nshape     model        lmforge tok/s  minimal tok/s  ratio  ms/step lmforge  minimal")
    for shape_name, model, a, b, ratio, tokens in summary:
        print(f"{shape_name:9s} {model:12s} {a:13,.0f} {b:14,.0f} {ratio:6.3f} {tokens / a * 1e3:16.2f} "
              f"{tokens / b * 1e3:8.2f}")
    clean_up(tmp, args.keep)


if __name__ == "__main__":
    main()
