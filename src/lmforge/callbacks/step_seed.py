"""Randomness as a function of the step: a resumed run draws exactly what the uninterrupted one did."""

from __future__ import annotations

import random

import lightning as L
import numpy as np
import torch

from lmforge.compat import lightning as lightning_compat
from lmforge.seeding import mix


class StepSeed(L.Callback):
    """Before every training batch, seed Python, NumPy and torch (CPU and CUDA) from (seed, rank,
    batch index). Dropout and any other random op of a step then depend only on where the step is,
    not on what ran before it in this process (validation loops, DataLoader iterators and the sanity
    check all draw from the global generators): restoring RNG states at a checkpoint could not give
    that, since a resumed process runs a different sequence of those before its first step."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        # total_batch_idx counts every training batch of the run and is restored on resume.
        seed = mix(self.seed, trainer.global_rank, lightning_compat.run_batch_index(trainer))
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.default_generator.manual_seed(seed)
        # Not torch.manual_seed: on a machine without CUDA it also queues a lazy seeding of each
        # accelerator type, formatting a stack trace each time (~0.1 ms a step).
        if torch.cuda.is_initialized():
            torch.cuda.manual_seed_all(seed)
