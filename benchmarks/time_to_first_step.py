"""Wall time from launching `lmforge train` to its first optimizer step, cold vs warm cache.

Each run is the real CLI in a subprocess (pretrain_tiny, its default callbacks, trainer.max_steps=1,
test=false) on the first `--files` stdlib files copied into a temp dir (`--files 0`: the default
corpus, the whole stdlib). "cold": a fresh LMFORGE_CACHE_DIR, so the run trains the BPE (4096) and
tokenizes + packs the corpus; "warm": the same cache again, both reused. (Cold means lmforge's cache
only: the OS page cache and Python's bytecode caches are warm in both.) Runs alternate cold, warm,
cold, warm, ...; medians are printed.

How the first step is found: this module doubles as a callback module. The runs get
`+callbacks.first_step._target_=time_to_first_step.FirstStep +callbacks.first_step.out=FILE` with
PYTHONPATH=benchmarks/, and `FirstStep` (built lazily through a module `__getattr__`, so running
this script does not import lightning) writes wall-clock (`time.time()`) stamps to FILE: when the
trainer is built (the datamodule has prepared tokenizer + packed corpus and the model exists by
then), at on_fit_start, on_train_start (after the sanity validation), and at the end of the first
training batch, i.e. after the first optimizer step. The parent stamps `time.time()` just before
`Popen`, so every phase is measured from the launch.

    python benchmarks/time_to_first_step.py                 # 200 stdlib files, 2 cold + 2 warm runs
    python benchmarks/time_to_first_step.py --files 0 --repeats 3     # the default corpus (all stdlib)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PHASES = [("trainer_built", "data + model ready"), ("fit_start", "on_fit_start"),
          ("train_start", "after sanity val"), ("first_step", "first optimizer step done")]


def _make_probe():
    import lightning as L

    class FirstStep(L.Callback):
        """Writes time.time() stamps of the start-up phases to `out` (JSON), up to the first step."""

        def __init__(self, out: str):
            self.out = out
            self.stamps = {"trainer_built": time.time()}

        def _stamp(self, key: str) -> None:
            self.stamps.setdefault(key, time.time())
            Path(self.out).write_text(json.dumps(self.stamps))

        def on_fit_start(self, trainer, pl_module) -> None:
            self._stamp("fit_start")

        def on_train_start(self, trainer, pl_module) -> None:
            self._stamp("train_start")

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            self._stamp("first_step")

    FirstStep.__module__ = __name__
    FirstStep.__qualname__ = "FirstStep"
    return FirstStep


_probe = None


def __getattr__(name: str):  # PEP 562: `time_to_first_step.FirstStep` builds the class on first use
    global _probe
    if name == "FirstStep":
        if _probe is None:
            _probe = _make_probe()
        return _probe
    raise AttributeError(name)


def one_run(corpus: Path | None, cache: Path, run_dir: Path) -> dict[str, float]:
    from _common import lmforge_cmd

    stamps_file = run_dir.parent / f"{run_dir.name}.stamps.json"
    cmd = lmforge_cmd() + [
        "train",
        "trainer.max_steps=1",
        "test=false",
        f"hydra.run.dir={run_dir}",
        "+callbacks.first_step._target_=time_to_first_step.FirstStep",
        f"+callbacks.first_step.out={stamps_file}",
    ] + ([f"data.paths=[{corpus}]"] if corpus else [])
    env = {**os.environ, "LMFORGE_CACHE_DIR": str(cache),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")]))}
    launch = time.time()
    proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    end = time.time()
    if proc.returncode or not stamps_file.exists():
        sys.exit(f"lmforge train failed ({proc.returncode}):\n{proc.stdout[-3000:]}")
    stamps = json.loads(stamps_file.read_text())
    out = {k: stamps[k] - launch for k, _ in PHASES if k in stamps}
    out["exit"] = end - launch
    return out


def main() -> None:
    sys.path.insert(0, str(HERE))
    from _common import clean_up, machine, median, spread, stdlib_subset

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--files", type=int, default=200, help="stdlib files in the corpus (0: all; default 200)")
    p.add_argument("--repeats", type=int, default=2, help="cold/warm pairs (default 2)")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (runs, caches) and print it")
    args = p.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="lmforge-bench-ttfs-"))
    corpus = None
    if args.files:
        corpus = tmp / "corpus"
        n, nbytes = stdlib_subset(corpus, max_files=args.files)
        what = f"{n} stdlib files copied to a temp dir, {nbytes / 1e6:.2f} MB"
    else:
        from lmforge.data.corpus import stdlib_files

        files = stdlib_files()
        what = f"the default corpus (data.paths=null): {len(files)} stdlib files, " \
               f"{sum(f.stat().st_size for f in files) / 1e6:.2f} MB"
    print(f"machine: {machine()}")
    print(f"corpus: {what}", flush=True)

    res: dict[str, list[dict[str, float]]] = {"cold": [], "warm": []}
    for i in range(args.repeats):
        cache = tmp / f"cache{i}"  # fresh for the cold run, then reused by the warm one
        for kind in ("cold", "warm"):
            r = one_run(corpus, cache, tmp / f"run{i}-{kind}")
            res[kind].append(r)
            phases = "  ".join(f"{k} {r[k]:5.1f}" for k, _ in PHASES if k in r)
            print(f"[{i + 1}/{args.repeats}] {kind}: first step at {r['first_step']:5.1f} s  ({phases}, "
                  f"exit {r['exit']:.1f}) s after launch", flush=True)

    print()
    print("seconds after launch, median (min, max) over runs:")
    print(f"{'phase':42s} {'cold':>24s} {'warm':>24s}")
    for key, label in PHASES + [("exit", "1 step, checkpoint, sample")]:
        cells = []
        for kind in ("cold", "warm"):
            xs = [r[key] for r in res[kind] if key in r]
            cells.append(f"{median(xs):.1f} ({min(xs):.1f}, {max(xs):.1f})" if xs else "n/a")
        print(f"{key + ' (' + label + ')':42s} {cells[0]:>24s} {cells[1]:>24s}")
    cold = median([r["first_step"] for r in res["cold"]])
    warm = median([r["first_step"] for r in res["warm"]])
    print(f"time to first step: cold {cold:.1f} s, warm {warm:.1f} s, the cache saves {cold - warm:.1f} s "
          f"(cold runs: {spread([r['first_step'] for r in res['cold']])}; "
          f"warm: {spread([r['first_step'] for r in res['warm']])})")
    clean_up(tmp, args.keep)


if __name__ == "__main__":
    main()
