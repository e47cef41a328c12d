"""Validate after the last step of a run that `trainer.max_steps` ends between two validations."""

from __future__ import annotations

import lightning as L


class ValidateLastStep(L.Callback):
    """Lightning validates when `val_check_interval` says so or when a run is stopped early (max_time,
    early stopping), but not when `max_steps` ends it: `max_steps=250` with a validation every 100 steps
    would leave its last 50 steps (the end of the learning-rate decay) unmeasured, and a run shorter than
    one interval no checkpoint at all. Asking to stop at the last step makes Lightning validate there,
    and the checkpoint callbacks save after that validation."""

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if 0 < trainer.max_steps <= trainer.global_step:
            trainer.should_stop = True  # the same on every rank: no collective decision needed
