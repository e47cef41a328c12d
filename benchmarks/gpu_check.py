"""GPU readiness in one command: the GPU paths of lmforge run end to end and print one table.

On a CUDA machine (about 5-8 minutes on one H100-class GPU):
  1. pretrain_tiny with trainer=gpu (bf16-mixed): the default recipe on a GPU;
  2. the GPT-2 124M recipe for a few dozen steps with compile=true: tokens/s, MFU, peak memory
     (the target is >= 50 % MFU in bf16 on an H100-class GPU; llm.c reaches 56-60 % on an A100);
  3. trainer=ddp over every GPU, when there is more than one;
  4. trainer=fsdp (one GPU: FSDP does not shard, so the multi-GPU paths need 2+ GPUs);
3 and 4 then test the best checkpoint, as a default run does.
Each is a real `lmforge train` in its own process; the table says what each reached, and the script
exits 1 when any of them failed.

`--dry-run` (CI runs it, on CPU): composes and validates every one of these configs (keys, types and
ranges against the code, the optimizer built once), without data, model or device.

    python benchmarks/gpu_check.py             # on the GPU machine
    python benchmarks/gpu_check.py --dry-run   # anywhere
"""

from __future__ import annotations

import argparse
import csv
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import lmforge_cmd  # noqa: E402

COMMON = ["print_config=false", "trainer.max_time=null", "checkpoint.every_n_minutes=null", "test=false"]
CHECKS = {
    "pretrain_tiny, trainer=gpu (bf16)": ["experiment=pretrain_tiny", "trainer=gpu", "trainer.max_steps=200",
                                          "trainer.val_check_interval=100"],
    "GPT-2 124M, compile=true": ["experiment=pretrain_gpt2_124m", "trainer=gpu", "compile=true",
                                 "trainer.max_steps=40", "trainer.accumulate_grad_batches=1", "data.batch_size=16",
                                 "trainer.val_check_interval=40", "data.val_windows=32", "trainer.log_every_n_steps=5"],
    "pretrain_tiny, trainer=ddp (all GPUs)": ["experiment=pretrain_tiny", "trainer=ddp", "trainer.max_steps=100",
                                              "trainer.val_check_interval=50", "test=true"],
    "pretrain_tiny, trainer=fsdp": ["experiment=pretrain_tiny", "trainer=fsdp", "trainer.max_steps=100",
                                    "trainer.val_check_interval=50", "test=true"],
}


def run_dir(name: str, root: Path) -> Path:
    """A check's run directory under `root`, named after it in letters, digits and _ (Hydra parses it)."""
    return root / re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_")


def train_args(name: str, overrides: list[str], root: Path) -> list[str]:
    """The `lmforge train` arguments of a check: the common overrides, its own (which win), its run
    directory and a cache."""
    return ["train", *COMMON, *overrides, f"hydra.run.dir={run_dir(name, root)}", f"paths.cache_dir={root / 'cache'}"]


def dry_run() -> int:
    """Compose and validate every check's arguments, as the real run passes them, on this machine (no
    data, model or device)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from hydra.errors import HydraException
    from omegaconf import open_dict

    from lmforge.config import conf_dir
    from lmforge.config.resolvers import register_resolvers
    from lmforge.config.validate import validate
    from lmforge.errors import UserError
    from lmforge.experiment.build import check_optimizer

    register_resolvers()
    failed = 0
    print(f"{'check':<42} {'dry run':<10} detail")
    for name, overrides in CHECKS.items():
        try:
            with initialize_config_dir(str(conf_dir()), version_base="1.3"):
                args = train_args(name, overrides, Path(tempfile.gettempdir()))
                cfg = compose("train", overrides=args[1:], return_hydra_config=True)
            with open_dict(cfg):
                cfg.hydra.runtime.output_dir = cfg.hydra.run.dir
                cfg.hydra.job.num = 0
            HydraConfig.instance().set_config(cfg.copy())
            with open_dict(cfg):
                del cfg["hydra"]
            config = validate(cfg, "train")
            check_optimizer(config)
            detail = f"{config['trainer']['accelerator']} x {config['trainer']['devices']}, {config['trainer']['precision']}"
            print(f"{name:<42} {'valid':<10} {detail}")
        except (UserError, HydraException) as exc:
            failed += 1
            print(f"{name:<42} {'INVALID':<10} {exc}")
    return 1 if failed else 0


def last_values(run: Path, name: str) -> list[float]:
    try:
        with open(run / "csv" / "metrics.csv") as f:
            return [float(row[name]) for row in csv.DictReader(f) if row.get(name)]
    except (OSError, KeyError, ValueError):
        return []


def run_check(name: str, overrides: list[str], root: Path, timeout: int) -> dict:
    run, cmd = run_dir(name, root), lmforge_cmd() + train_args(name, overrides, root)
    start = time.time()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        status, error = proc.returncode, (proc.stderr.strip().splitlines() or [""])[-1]
    except subprocess.TimeoutExpired:
        status, error = -1, f"timed out after {timeout} s"
    rates = last_values(run, "train/tokens_per_sec")[2:]  # after compilation and warm-up
    return {"name": name, "ok": status == 0, "error": error if status else "", "seconds": time.time() - start,
            "tokens_per_sec": statistics.median(rates) if rates else None,
            "mfu": statistics.median(last_values(run, "train/mfu")[2:] or [float("nan")]),
            "peak_gb": max(last_values(run, "train/peak_mem_gb") or [float("nan")]),
            "val_loss": (last_values(run, "val/loss") or [float("nan")])[-1]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="compose and validate every config, on any machine")
    parser.add_argument("--timeout", type=int, default=240, help="seconds per check")
    parser.add_argument("--keep", action="store_true", help="keep the run directories")
    args = parser.parse_args()
    if args.dry_run:
        return dry_run()

    import torch

    if not torch.cuda.is_available():
        print("no CUDA GPU here: run with --dry-run, or on a GPU machine")
        return 1
    gpus = torch.cuda.device_count()
    print(f"{gpus} x {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
    root = Path(tempfile.mkdtemp(prefix="lmforge-gpu-check-"))
    results = []
    for name, overrides in CHECKS.items():
        if "ddp" in name and gpus < 2:
            continue
        results.append(run_check(name, overrides, root, args.timeout))
        r = results[-1]
        print(f"  {name}: {'ok' if r['ok'] else 'FAILED ' + r['error']} ({r['seconds']:.0f} s)", flush=True)
    print(f"\n{'check':<42} {'status':<7} {'tokens/s':>11} {'MFU':>6} {'peak GB':>8} {'val/loss':>9} {'s':>5}")
    for r in results:
        rate = f"{r['tokens_per_sec']:,.0f}" if r["tokens_per_sec"] else "-"
        print(f"{r['name']:<42} {'ok' if r['ok'] else 'FAILED':<7} {rate:>11} {r['mfu']:>6.1%} {r['peak_gb']:>8.1f} "
              f"{r['val_loss']:>9.3f} {r['seconds']:>5.0f}")
    for r in results:
        if not r["ok"]:
            print(f"{r['name']}: {r['error']}")
    print(f"runs: {root}" if args.keep else "")
    if not args.keep:
        import shutil

        shutil.rmtree(root, ignore_errors=True)
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
