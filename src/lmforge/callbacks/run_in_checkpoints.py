"""What every checkpoint of a run carries beyond Lightning's own state, and what it must never hold."""

from __future__ import annotations

from importlib import metadata
from typing import Any

import lightning as L
import torch

from lmforge.errors import RunFailed


class RunInCheckpoints(L.Callback):
    """Put the run's resolved config in every checkpoint (a lone .ckpt can be rebuilt), flush the
    loggers first (the metric history up to the checkpoint is on disk when it is), and refuse to
    save non-finite weights (a `last` checkpoint is always one worth resuming from)."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        bad = next((name for name, p in pl_module.named_parameters() if not torch.isfinite(p).all()), None)
        # A save is collective and, under FSDP, each rank checks only its shard: all refuse when any does.
        if trainer.world_size > 1 and trainer.strategy.reduce_boolean_decision(bad is not None, all=False):
            bad = bad or "in another rank's shard"
        if bad is not None:
            raise RunFailed(f"weights became non-finite (first: {bad}) at step {trainer.global_step}: not "
                            "saving them; lower optimizer.lr or set trainer.gradient_clip_val")
        checkpoint["lmforge"] = {"config": self.config, "version": metadata.version("lmforge")}
        for logger in trainer.loggers:
            logger.save()
