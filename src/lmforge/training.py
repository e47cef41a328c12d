"""`lmforge train` as a library call: validate, build, fit, test, and write the run directory."""

from __future__ import annotations

import logging
import math
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Optional

from omegaconf import DictConfig

from lmforge.config.validate import validate
from lmforge.errors import UserError

log = logging.getLogger(__name__)


def train(cfg: DictConfig) -> Optional[float]:
    """Run one training job; returns `optimized_metric` for sweepers (None if unset)."""
    config = validate(cfg, "train")

    import lightning as L

    from lmforge.atomic import write_json, write_text
    from lmforge.config.tree import render_tree
    from lmforge.experiment import build_datamodule, build_module, build_trainer
    from lmforge.runs.metadata import run_info

    quiet_lightning_console()
    run_dir = Path(config["paths"]["output_dir"])
    main_process = is_main_process()
    if main_process and config.get("print_config"):
        print(render_tree(config, color=sys.stdout.isatty()))
    resume_from = checkpoint_to_resume(config, run_dir)
    if config.get("seed") is not None:
        L.seed_everything(config["seed"], workers=True, verbose=False)

    datamodule = build_datamodule(config)
    module, config = build_module(config, datamodule)
    info = run_info("train", run_dir, resumed_from=str(resume_from) if resume_from else None,
                    parent=getattr(module, "parent_info", None))
    if main_process:
        save_config(run_dir, config)
        save_tokenizer(run_dir, datamodule)
        write_text(run_dir / "config_tree.txt", render_tree(config))
        write_json(run_dir / "run.json", info)

    trainer = build_trainer(config)
    for logger in trainer.loggers:
        logger.log_hyperparams(config)
    metrics: dict[str, float] = {}
    status = "failed"
    try:
        if config["train"]:
            trainer.fit(module, datamodule=datamodule, ckpt_path=str(resume_from) if resume_from else None)
            metrics.update(scalar_metrics(trainer.callback_metrics))
            best = getattr(trainer.checkpoint_callback, "best_model_score", None)
            if best is not None:
                metrics[f"best/{config['monitor']}"] = float(best)
        if config["test"]:
            best_path = getattr(trainer.checkpoint_callback, "best_model_path", "") if config["train"] else ""
            ckpt = best_path or (str(resume_from) if resume_from and not config["train"] else None)
            trainer.test(module, datamodule=datamodule, ckpt_path=ckpt, weights_only=False)
            metrics.update(scalar_metrics(trainer.callback_metrics, prefix="test/"))
        status = "interrupted" if trainer.interrupted else "finished"
        leave_together()
    finally:
        if trainer.is_global_zero:
            write_json(run_dir / "run.json", {**info, "status": status, "finished": time.strftime(
                "%Y-%m-%dT%H:%M:%S%z"), "global_step": trainer.global_step})
        finish_wandb()
    if trainer.is_global_zero:
        write_json(run_dir / "metrics.json", metrics)
        on_end = getattr(module, "on_run_end", None)
        if callable(on_end):
            on_end(run_dir, datamodule)
        print(f"run directory: {run_dir}")
    return pick_metric(metrics, config.get("optimized_metric"))


def is_main_process() -> bool:
    """Global rank 0, before the Trainer knows: the launcher's rank variables (RANK, SLURM_PROCID...,
    read by Lightning) and the node rank of a multi-node job started by hand (NODE_RANK)."""
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    return rank_zero_only.rank == 0 and int(os.environ.get("NODE_RANK", 0)) == 0


def leave_together() -> None:
    """Under DDP, wait for every rank, then close the process group: a rank that exits while another
    still talks to it can make the other abort at exit ("terminate called without an active exception")."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def quiet_lightning_console() -> None:
    """Lightning adds its own console handler; Hydra's root handlers already print and save to
    <run dir>/train.log, so drop Lightning's to avoid every message appearing twice."""
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")  # a deprecation inside Lightning itself


def checkpoint_to_resume(config: dict, run_dir: Path) -> Optional[Path]:
    """`ckpt_path` (a .ckpt or a run directory), or the newest checkpoint here with `resume=auto`."""
    from lmforge.runs.checkpoints import find_checkpoint, newest_checkpoint, read_checkpoint

    if config.get("ckpt_path"):
        path = find_checkpoint(config["ckpt_path"], prefer=("last.ckpt", "best.ckpt"))
    elif config.get("resume") == "auto":
        path = newest_checkpoint(run_dir)
        if path is None:
            log.info("resume=auto: no checkpoint in %s yet, starting from scratch", run_dir)
            return None
    else:
        return None
    read_checkpoint(path)  # fail now, in one line, if it is corrupt
    return path


def save_config(run_dir: Path, config: dict) -> None:
    """Overwrite Hydra's snapshot with the resolved config (dims from the data filled in)."""
    import yaml

    from lmforge.atomic import write_text

    write_text(run_dir / ".hydra" / "config.yaml", yaml.safe_dump(config, sort_keys=False))


def save_tokenizer(run_dir: Path, datamodule) -> None:
    """Keep the run's tokenizer beside its checkpoints: generate/export/fine-tune need nothing else."""
    tokenizer = getattr(datamodule, "tokenizer", None)
    if tokenizer is not None:
        tokenizer.save_pretrained(str(run_dir / "tokenizer"))


def scalar_metrics(metrics: dict[str, Any], prefix: str = "") -> dict[str, float]:
    out = {}
    for key, value in metrics.items():
        if prefix and not key.startswith(prefix):
            continue
        number = float(value.item() if hasattr(value, "item") else value)
        if math.isfinite(number):
            out[key] = number
    return out


def pick_metric(metrics: dict[str, float], name: Optional[str]) -> Optional[float]:
    if not name:
        return None
    if name not in metrics:
        raise UserError(f"optimized_metric '{name}' was not logged; logged: {', '.join(sorted(metrics))}")
    return metrics[name]


def finish_wandb() -> None:
    """Close the W&B run of this job so that each job of a multirun is its own run."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish()
