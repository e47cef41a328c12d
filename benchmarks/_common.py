"""Helpers shared by the benchmark scripts (not a benchmark itself)."""

from __future__ import annotations

import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def lmforge_cmd() -> list[str]:
    """The `lmforge` console script of the interpreter running this benchmark (else `python -m lmforge`)."""
    exe = Path(sys.executable).parent / "lmforge"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "lmforge"]


def bench_env(cache: Path | None = None) -> dict[str, str]:
    """The environment of a benchmarked command: benchmarks/ on PYTHONPATH (for the step clock) and
    `cache`, if given, as lmforge's cache."""
    here = str(Path(__file__).resolve().parent)
    pythonpath = os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": pythonpath, **({"LMFORGE_CACHE_DIR": str(cache)} if cache else {})}


def run_checked(cmd: list[str], cache: Path | None = None) -> float:
    """Run a command (an `lmforge` command line, a minimal loop) in `bench_env(cache)`; exit with its
    output if it fails. Returns its wall seconds."""
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=bench_env(cache), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode:
        sys.exit(f"{' '.join(cmd[:3])} ... failed ({proc.returncode}):\n{proc.stdout[-3000:]}")
    return wall


def byte_token_files(corpus: Path, cache: Path, out: Path, seed: int) -> tuple[Path, Path, int, float]:
    """Tokenize + pack `corpus` with the bytes tokenizer into `cache` (what `lmforge train` then reuses)
    and write its train/val tokens as uint16 files in `out` for the minimal loop (nanoGPT's format);
    return (train file, val file, vocab size, held-out bytes per token)."""
    import numpy as np

    from lmforge.data.packing import load_packed
    from lmforge.data.text import TextDataModule
    from lmforge.tokenizers import Bytes

    dm = TextDataModule(paths=[str(corpus)], tokenizer=Bytes(), cache_dir=str(cache), seed=seed)
    dm.prepare_data()
    train, val, meta = load_packed(dm.packed_dir)
    paths = out / "train.bin", out / "val.bin"
    for array, path in zip((train, val), paths):
        np.asarray(array, dtype=np.uint16).tofile(path)
    return paths[0], paths[1], len(dm.tokenizer), meta["val_bytes"] / meta["val_tokens"]


def stdlib_subset(dest: Path, max_files: int | None = None, max_bytes: int | None = None) -> tuple[int, int]:
    """Copy the first stdlib `.py` files (lmforge's default corpus, sorted) into `dest`.

    Stops at `max_files` files or once `max_bytes` are copied; returns (files, bytes).
    File names are prefixed with their rank so the copy keeps the stdlib order.
    """
    from lmforge.data.corpus import stdlib_files

    dest.mkdir(parents=True, exist_ok=True)
    n = total = 0
    for f in stdlib_files():
        if (max_files and n >= max_files) or (max_bytes and total >= max_bytes):
            break
        shutil.copyfile(f, dest / f"{n:04d}_{f.name}")
        n += 1
        total += f.stat().st_size
    return n, total


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def spread(xs: list[float], digits: int = 1) -> str:
    """'median (min-max, n=N)' of a list of numbers."""
    if not xs:
        return "n/a"
    return f"{median(xs):,.{digits}f} (min {min(xs):,.{digits}f}, max {max(xs):,.{digits}f}, n={len(xs)})"


def machine() -> str:
    try:
        load = "load avg %.2f %.2f %.2f" % os.getloadavg()
    except OSError:
        load = "load avg n/a"
    import torch

    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads), python {platform.python_version()}, {load}")


def clean_up(tmp: Path, keep: bool) -> None:
    """Delete the benchmark's temp dir, or say where it is with --keep."""
    if keep:
        print(f"kept: {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
