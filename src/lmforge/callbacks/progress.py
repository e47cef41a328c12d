"""The rich progress bar of every run."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import RichProgressBar as LightningRichProgressBar

from lmforge.compat.lightning import stop_rich_progress_promptly
from lmforge.loggers.cadence import written_step


class RichProgressBar(LightningRichProgressBar):
    """Lightning's `RichProgressBar`, reading the logged metrics during training only on the steps the
    loggers write (the only steps whose metrics are new) instead of after every batch: each read goes
    through Lightning's result collection, ~50 us, a fifth of Lightning's per-step cost on a tiny model.
    It stops at once where Lightning's waits out its refresh period (up to 1 s at each end of fit,
    validation and test)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        stop_rich_progress_promptly()

    def _update_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.training and not written_step(trainer, trainer.global_step):
            return
        super()._update_metrics(trainer, pl_module)

    def _get_train_description(self, current_epoch: int) -> str:
        """Lightning's "Epoch 3/9"; with no epoch limit (max_epochs=-1: steps or time end the run) "Epoch 3",
        where Lightning writes "Epoch 3/-2"."""
        if self.trainer.max_epochs is None or self.trainer.max_epochs >= 0:
            return super()._get_train_description(current_epoch)
        return f"{f'Epoch {current_epoch}':{len(self.validation_description)}}"
