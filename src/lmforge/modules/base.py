"""What every lmforge LightningModule shares: optimizer factories and the config in checkpoints."""

from __future__ import annotations

from typing import Any, Callable, Optional

import lightning as L
from torch import nn


class TaskModule(L.LightningModule):
    """Holds the model and builds the optimizer/scheduler from the config's `_partial_` factories."""

    def __init__(self, model: nn.Module, optimizer: Optional[Callable] = None,
                 scheduler: Optional[Callable] = None):
        super().__init__()
        self.model = model
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        # The resolved run config, stored in every checkpoint so that a lone .ckpt can be rebuilt.
        self.run_config: Optional[dict] = None

    def parameter_groups(self) -> list[dict[str, Any]]:
        """Trainable parameters; subclasses split them (no weight decay on norms, head lr, ...)."""
        return [{"params": [p for p in self.parameters() if p.requires_grad]}]

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(self.parameter_groups())
        if self.scheduler_factory is None:
            return optimizer
        from lmforge.optim.budget import Budget

        # The schedule is laid out over the run's budget: max_steps and/or max_time, whichever ends first.
        scheduler = self.scheduler_factory(optimizer, budget=Budget.from_trainer(self.trainer))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        from lmforge import __version__

        checkpoint["lmforge"] = {"config": self.run_config, "version": __version__}
