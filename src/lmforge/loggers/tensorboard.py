"""TensorBoard event files that continue one stream across resumes."""

from __future__ import annotations

from typing import Optional

from lightning.pytorch.loggers import TensorBoardLogger


def tensorboard_logger(save_dir: str, name: str = "tensorboard", version: str = "", default_hp_metric: bool = False,
                       resume_step: Optional[int] = None) -> TensorBoardLogger:
    """Lightning's TensorBoardLogger; resumed at `resume_step`, its writer purges the events a killed
    attempt logged for the steps redone (TensorBoard's `purge_step`), so every step is shown once: a
    logger's step counts the optimizer steps done before, so those logged at `resume_step` on are redone."""
    extra = {"purge_step": resume_step} if resume_step is not None else {}
    return TensorBoardLogger(save_dir, name=name, version=version, default_hp_metric=default_hp_metric, **extra)
