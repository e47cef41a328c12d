"""`lmforge eval` as a library call: test a finished run's checkpoint, write metrics.json."""

from __future__ import annotations

import sys
from pathlib import Path

from omegaconf import DictConfig

from lmforge.config.validate import validate


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Rebuild the run of `ckpt_path` (with `data.*`/`module.*` overrides), test it, save metrics."""
    config = validate(cfg, "eval", overlays=("data", "module"))

    import lightning as L

    from lmforge.atomic import write_json
    from lmforge.config.tree import render_tree
    from lmforge.experiment import build_trainer
    from lmforge.runs.load import load_run
    from lmforge.runs.metadata import run_info
    from lmforge.training import (
        finish_wandb,
        is_main_process,
        quiet_lightning_console,
        save_config,
        scalar_metrics,
    )

    quiet_lightning_console()
    run_dir = Path(config["paths"]["output_dir"])
    if config.get("seed") is not None:
        L.seed_everything(config["seed"], workers=True, verbose=False)
    loaded = load_run(config["ckpt_path"], overrides={"data": config["data"], "module": config["module"]})
    run_config = {**loaded.config, "trainer": config["trainer"], "logger": config["logger"],
                  "callbacks": {}, "paths": config["paths"], "task_name": config["task_name"]}
    if config.get("print_config"):
        print(render_tree(run_config, color=sys.stdout.isatty()))
    if is_main_process():
        save_config(run_dir, run_config)
        write_json(run_dir / "run.json", run_info("eval", run_dir, evaluated=str(loaded.checkpoint)))
    trainer = build_trainer(run_config, enable_checkpointing=False)
    try:
        trainer.test(loaded.module, datamodule=loaded.datamodule)
    finally:
        finish_wandb()
    metrics = scalar_metrics(trainer.callback_metrics)
    if trainer.is_global_zero:
        write_json(run_dir / "metrics.json", metrics)
        on_end = getattr(loaded.module, "on_run_end", None)
        if callable(on_end):
            on_end(run_dir, loaded.datamodule)
        print(f"run directory: {run_dir}")
    return metrics
