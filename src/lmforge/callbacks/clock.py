"""`train/elapsed`: wall-clock seconds of fitting so far, resumed runs included (for curves over time)."""

from __future__ import annotations

import time
from typing import Any

import lightning as L

from lmforge.loggers.cadence import written_step


class RunClock(L.Callback):
    """Logs `train/elapsed` with the training metrics; its total is saved in checkpoints and restored."""

    def __init__(self) -> None:
        self.before = 0.0  # seconds of earlier attempts of this run (restored from the checkpoint)
        self.started = time.monotonic()

    def elapsed(self) -> float:
        return self.before + time.monotonic() - self.started

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.started = time.monotonic()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if written_step(trainer, trainer.global_step):
            pl_module.log("train/elapsed", self.elapsed(), on_step=True, on_epoch=False)

    def state_dict(self) -> dict[str, Any]:
        return {"elapsed": self.elapsed()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.before = float(state_dict.get("elapsed", 0.0))
