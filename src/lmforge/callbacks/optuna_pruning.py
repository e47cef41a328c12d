"""Prune a bad trial of an Optuna sweep from its validation metric, inside the job that trains it.

Ours rather than optuna-integration's PyTorchLightningPruningCallback: that one reports once per
epoch (a language model validates many times within one epoch), leaves marking the trial PRUNED to
an `objective` wrapper (our job runs apart from the sweeper, which only sees its return) and needs
an RDB storage under DDP.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Optional

import lightning as L

from lmforge.config.schema import Positive

log = logging.getLogger(__name__)


class OptunaPruning(L.Callback):
    """After each validation, report `monitor` (at the global step) to this job's trial; when the
    study's pruner says so, mark the trial PRUNED in the study and end the job by raising
    `optuna.TrialPruned`. Does nothing outside an Optuna sweep (`job_number` null).

    The sweeper (hydra/sweeper=lmforge_optuna) numbers trial t's jobs t*k ... t*k+k-1 for k
    `seeds_per_trial`, so a preset wires it with `job_number: ${hydra:job.num}`,
    `seeds_per_trial: ${hydra:sweeper.seeds_per_trial}` and the sweeper's own storage, study_name and
    pruner. With several seeds, the first seed's job reports for the trial (the others run to the end).
    """

    def __init__(self, monitor: str, storage: Optional[str] = None, study_name: Optional[str] = None,
                 job_number: Optional[int] = None, seeds_per_trial: Positive = 1, pruner: Optional[Any] = None) -> None:
        self.monitor = monitor
        self.storage = storage
        self.study_name = study_name
        first_seed = job_number is not None and job_number % seeds_per_trial == 0
        self.trial_number = job_number // seeds_per_trial if first_seed else None
        self.pruner = pruner
        self._study = None
        self._trial = None

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.trial_number is None or trainer.sanity_checking:
            return
        pruned = self._report(trainer) if trainer.is_global_zero else False
        if trainer.strategy.broadcast(pruned, src=0):  # every rank stops together
            import optuna

            raise optuna.TrialPruned(f"trial {self.trial_number} pruned at step {trainer.global_step}")

    def _report(self, trainer: L.Trainer) -> bool:
        """Report the metric; True if the trial is pruned (and now marked so in the study)."""
        from optuna.exceptions import UpdateFinishedTrialError
        from optuna.trial import TrialState

        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            log.warning("optuna pruning: '%s' is not logged at validation; nothing to report", self.monitor)
            return False
        value = float(value)
        if not math.isfinite(value):
            return False  # the job fails at its end (a non-finite metric is a failed trial)
        trial = self._open_trial()
        try:
            trial.report(value, step=trainer.global_step)
            if not trial.should_prune():
                return False
            self._study.tell(self.trial_number, state=TrialState.PRUNED)
        except UpdateFinishedTrialError:  # cut off by a sweep process that took this one for dead
            log.warning("optuna trial %d is already finished in the study; not reporting", self.trial_number)
            self.trial_number = None
            return False
        return True

    def _open_trial(self):
        if self._trial is None:
            import optuna

            from hydra_plugins.lmforge_optuna_sweeper.storage import open_storage
            from lmforge.compat import optuna as optuna_compat

            # No pruner configured means no pruning (Optuna's own default would be a MedianPruner).
            self._study = optuna.load_study(study_name=self.study_name, storage=open_storage(self.storage),
                                            pruner=self.pruner or optuna.pruners.NopPruner())
            self._trial = optuna_compat.open_trial(self._study, self.trial_number)
        return self._trial
