"""`lmforge train`: compose conf/train.yaml + overrides, validate, then `run_train` in the job's directory.

Every experiment (the MLP, pretraining, fine-tuning) goes through this one flow; the work lives in
`lmforge.experiment.run.run_train`, which this shell hands what it reads from Hydra's runtime.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from omegaconf import DictConfig

from lmforge.config.validate import validate
from lmforge.job import in_multirun, output_dir, run_dir_is_fixed


def main(cfg: DictConfig) -> Optional[float]:
    # 1. Validate: every key known, every value well typed, before anything is built.
    config = validate(cfg, "train")

    from hydra.core.hydra_config import HydraConfig

    from lmforge.experiment.run import run_train

    hydra = HydraConfig.get()
    result = run_train(config, output_dir(), overrides=list(hydra.overrides.task),
                       sweep_dir=Path(hydra.sweep.dir) if in_multirun() else None,
                       fixed_run_dir=run_dir_is_fixed())
    return result.value
