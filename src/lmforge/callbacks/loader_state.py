"""Give the training DataLoader its checkpointed position on resume (Lightning may not)."""

from __future__ import annotations

import lightning as L

from lmforge.compat import lightning as lightning_compat


class RestoreLoaderState(L.Callback):
    """Lightning hands a stateful training DataLoader its saved state when it first sets up the training
    data; a run whose LR schedule reads `trainer.estimated_stepping_batches` sets it up before the
    checkpoint is restored, and the state is then never loaded. At the start of training, after the
    restore and before the first batch is drawn, this loads it (Lightning's own step, which does nothing
    when the run is not resuming or the state was already loaded)."""

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        lightning_compat.load_training_loader_state(trainer)
