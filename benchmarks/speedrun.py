"""Time to a target validation loss, speedrun-style: `experiment=pretrain_modern` against nanoGPT's tiny
character recipe (its README's CPU settings, run by the minimal loop, benchmarks/minimal_gpt.py) on the
same training text and the same validation file, over several seeds.

Text: the first --mb MB of stdlib files; the last tenth of them (by bytes, as nanoGPT's prepare.py keeps
the last 10 % of its text) is concatenated into one validation file, the rest is the training text.
lmforge trains with `data.paths=[train/] data.val_paths=[val.txt]` (its BPE 4096 tokenizer trained and
the corpus packed once, before any timed run); nanoGPT's recipe reads the same text as bytes (vocabulary
256, nanoGPT's train.bin/val.bin format). Both report validation loss in bits per byte of the same file.

Target: nanoGPT's final validation bits per byte (the median over seeds, after its 2,000 iterations).
Time to target: training time from the end of the first step to the first validation at or below the
target, linearly interpolated between the two validations around the crossing; validation time is left
out on both sides (the clock of benchmarks/_clock.py, the same on both sides). The medians over seeds
count a run that never reaches the target as the slowest. Runs take turns with one seed each (nanoGPT,
lmforge; then lmforge, nanoGPT; with more sides the order rotates by one a seed). The clock leaves the
first step out (a compiled model compiles in it): its seconds are printed beside. Nothing is asserted;
figures depend on the machine's load, which the sides share.

Tuning: `--variant` (repeatable) names a recipe as overrides of the preset; every variant runs once per
seed, in an order that rotates with the seed, and each gets its own line of time to target. `--target`
gives the target in bits/byte instead of running nanoGPT (for tuning passes against a measured target).

    python benchmarks/speedrun.py                         # 3 seeds, lmforge stopped at --time (1 minute)
    python benchmarks/speedrun.py --seeds 5 --lmforge optimizer.lr=0.03 data.batch_size=32
    python benchmarks/speedrun.py --target 1.5463 --variant preset= --variant compiled=compile=true
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _clock import StepClock, busy_time  # noqa: E402
from _common import clean_up, lmforge_cmd, machine, median, run_checked, spread, stdlib_subset  # noqa: E402
from modern_vs_gpt2 import NANOGPT_CHAR  # noqa: E402

VAL_EVERY = 25  # lmforge validates every this many steps: points of its curve


def split_text(corpus: Path, out: Path) -> tuple[Path, Path, int]:
    """Files of `corpus` in order: the first ~90 % of bytes into out/train/, the rest into out/val.txt."""
    files = sorted(corpus.iterdir())
    sizes = np.cumsum([f.stat().st_size for f in files])
    cut = int(np.searchsorted(sizes, 0.9 * sizes[-1])) + 1
    (out / "train").mkdir(parents=True)
    for f in files[:cut]:
        shutil.copyfile(f, out / "train" / f.name)
    val = out / "val.txt"
    val.write_text("".join(f.read_text(encoding="utf-8") for f in files[cut:]), encoding="utf-8")
    return out / "train", val, len(files) - cut


def byte_files(train: Path, val: Path, out: Path) -> tuple[Path, Path]:
    """The texts as uint16 byte ids, nanoGPT's train.bin / val.bin format."""
    paths = out / "train.bin", out / "val.bin"
    texts = ["".join(f.read_text(encoding="utf-8") for f in sorted(train.iterdir())), val.read_text(encoding="utf-8")]
    for text, path in zip(texts, paths):
        np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.uint16).tofile(path)
    return paths


def seconds_at(clock: StepClock, steps: list[int]) -> list[float]:
    """Training seconds from the end of step 1 to the end of each of `steps` (validation left out)."""
    return [busy_time(clock.stamps[0], clock.stamps[n - 1], clock.pauses) for n in steps]


def time_to(target: float, times: list[float], bpbs: list[float]) -> float:
    """The interpolated training time at which the curve first reaches `target` (inf if it never does)."""
    for i, (t, v) in enumerate(zip(times, bpbs)):
        if v <= target:
            if i == 0:
                return t
            t0, v0 = times[i - 1], bpbs[i - 1]
            return t0 + (t - t0) * (v0 - target) / (v0 - v)
    return math.inf


def nanogpt(seed: int, bins: tuple[Path, Path], tmp: Path) -> dict:
    out, clock = tmp / f"nanogpt-{seed}.json", tmp / f"nanogpt-{seed}.clock"
    run_checked([sys.executable, str(Path(__file__).resolve().parent / "minimal_gpt.py"), "--train", str(bins[0]),
                 "--val", str(bins[1]), "--vocab-size", "256", *NANOGPT_CHAR, "--eval-interval", "100",
                 "--seed", str(seed), "--json", str(out), "--clock", str(clock)])
    result = json.loads(out.read_text())
    steps, losses = zip(*result["curve"])
    return {"times": seconds_at(StepClock.load(clock), list(steps)), "bpbs": [v / math.log(2) for v in losses],
            "steps": result["iters"]}


def lmforge(seed: int, variant: str, args, train: Path, val: Path, cache: Path, tmp: Path) -> dict:
    run, clock = tmp / f"{variant}-{seed}", tmp / f"{variant}-{seed}.clock"
    run_checked(lmforge_cmd() + [
        "train", "experiment=pretrain_modern", f"data.paths=[{train}]", f"data.val_paths=[{val}]", f"seed={seed}",
        f"trainer.max_time={args.time}", f"trainer.val_check_interval={VAL_EVERY}", "test=false", "logger=csv",
        "+callbacks.step_clock._target_=_clock.lightning_clock", f"+callbacks.step_clock.path={clock}",
        f"hydra.run.dir={run}", *args.lmforge, *args.variants[variant]], cache)
    with open(run / "csv" / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("val/bpb")]
    steps = [int(r["step"]) + 1 for r in rows]  # Lightning files what step N logs at step N - 1
    clock = StepClock.load(clock)
    return {"times": seconds_at(clock, steps), "bpbs": [float(r["val/bpb"]) for r in rows], "steps": steps[-1],
            "first_step": clock.stamps[0] - clock.started}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=3, help="pairs of runs, one seed each (default 3)")
    p.add_argument("--mb", type=float, default=4.0, help="MB of stdlib text, validation included (default 4)")
    p.add_argument("--time", default="00:00:01:00", help="lmforge's trainer.max_time (default 1 minute)")
    p.add_argument("--lmforge", nargs="*", default=[], help="extra overrides for the lmforge side")
    p.add_argument("--variant", action="append", default=[], metavar="NAME=OVERRIDES",
                   help="a recipe to compare: a name, '=', its overrides separated by spaces (repeatable)")
    p.add_argument("--target", type=float, help="target bits/byte; nanoGPT is not run when given")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (runs, cache) and print it")
    args = p.parse_args()
    args.variants = dict(v.partition("=")[::2] for v in args.variant) or {"lmforge": ""}
    args.variants = {name: overrides.split() for name, overrides in args.variants.items()}

    tmp = Path(tempfile.mkdtemp(prefix="lmforge-bench-speedrun-"))
    cache = tmp / "cache"
    n_files, n_bytes = stdlib_subset(tmp / "corpus", max_bytes=int(args.mb * 1e6))
    train, val, n_val = split_text(tmp / "corpus", tmp)
    bins = byte_files(train, val, tmp)
    run_checked(lmforge_cmd() + ["tokenizer", f"data.paths=[{train}]", f"data.val_paths=[{val}]"], cache)
    print(f"machine: {machine()}")
    print(f"text: {n_files} stdlib files, {n_bytes / 1e6:.2f} MB; validation: the last {n_val} files in one file, "
          f"{val.stat().st_size / 1e6:.2f} MB; lmforge overrides: {args.lmforge or 'none'}", flush=True)

    sides = ([] if args.target else ["nanogpt-char"]) + list(args.variants)
    runs: dict[str, list[dict]] = {side: [] for side in sides}
    for seed in range(args.seeds):
        for side in sides[seed % len(sides):] + sides[:seed % len(sides)]:
            r = nanogpt(seed, bins, tmp) if side == "nanogpt-char" else lmforge(seed, side, args, train, val, cache, tmp)
            runs[side].append(r)
            print(f"[seed {seed}] {side:12s} final val bpb {r['bpbs'][-1]:.4f} after {r['steps']} steps, "
                  f"{r['times'][-1]:.1f} s of training", flush=True)

    if args.target:
        target = args.target
        print(f"\ntarget: {target:.4f} bits/byte (given)")
    else:
        target = median([r["bpbs"][-1] for r in runs["nanogpt-char"]])
        print(f"\ntarget: nanoGPT's final validation loss, median over seeds: {target:.4f} bits/byte")
    reached = {side: [time_to(target, r["times"], r["bpbs"]) for r in rs] for side, rs in runs.items()}
    for side, times in reached.items():
        finite = [t for t in times if math.isfinite(t)]
        print(f"{side:12s} seconds to target: {spread(finite)}; reached in {len(finite)} of {len(times)} runs; "
              f"median {median(times):.1f}; final bpb {spread([r['bpbs'][-1] for r in runs[side]], 4)}")
        if side != "nanogpt-char":  # what the clock leaves out: the first step (a compiled model's compilation)
            print(f"{'':12s} first step: {spread([r['first_step'] for r in runs[side]])} s")
    if "nanogpt-char" in reached:
        theirs = median(reached["nanogpt-char"])
        for side in args.variants:
            mine = median(reached[side])
            if math.isfinite(mine) and math.isfinite(theirs):
                print(f"{side} / nanoGPT, median seconds to target: {mine / theirs:.2f}x (goal: 0.50x or less)")
            else:
                print(f"{side} / nanoGPT: no ratio, a median run did not reach the target (run more seeds)")
    clean_up(tmp, args.keep)


if __name__ == "__main__":
    main()
