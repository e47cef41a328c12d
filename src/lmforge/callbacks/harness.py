"""Score lm-evaluation-harness tasks while a language model trains: `harness/<task>/<metric>` curves."""

from __future__ import annotations

from typing import Annotated, Any, Optional

import lightning as L
import torch
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_info
from pydantic import Field

from lmforge.data.base import DataModule
from lmforge.distributed import whole_parameters
from lmforge.errors import UserError
from lmforge.loggers.cadence import logger_step
from lmforge.modules.base import task_model


class HarnessScores(L.Callback):
    """Every `every_n_steps` optimizer steps (at the validation that follows, when the run validates)
    and at the end of fitting, score `tasks` (at most `limit` examples each) with the current model and
    log `harness/<task>/<metric>` to every logger (CSV, TensorBoard, W&B) at the step of that
    validation's row, the latest also in the run's metrics.json; rank 0 prints the table.

    Under DDP every rank scores its share of the examples and rank 0 logs the one result (lm-eval splits
    the requests by rank). The step of the last scoring is saved in checkpoints: a resumed run scores
    neither a step again nor skips one (its CSV keeps the rows before the checkpoint's step)."""

    def __init__(self, tasks: list[str], every_n_steps: Annotated[int, Field(ge=1)] = 200,
                 limit: Optional[Annotated[int, Field(ge=1)]] = 20,
                 num_fewshot: Optional[Annotated[int, Field(ge=0)]] = None,
                 batch_size: Annotated[int, Field(ge=1)] = 8, include_path: Any = None, seed: int = 0,
                 tokenizer: Any = None) -> None:
        from lmforge.evaluation.task_catalog import task_manager

        if not tasks:
            raise UserError("callbacks.harness.tasks: give at least one task, e.g. [lmforge_python_mc]")
        task_manager(list(tasks), include_path)  # an unknown task or folder stops the run before it trains
        self.tasks = list(tasks)
        self.every_n_steps = every_n_steps
        self.limit = limit
        self.num_fewshot = num_fewshot
        self.batch_size = batch_size
        self.include_path = include_path
        self.seed = seed
        self.tokenizer = tokenizer
        self._last_step = -1
        self.scores: list[tuple[int, dict[str, float]]] = []  # (step, metrics) logged by this process

    def state_dict(self) -> dict[str, Any]:
        return {"last_step": self._last_step}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._last_step = int(state_dict.get("last_step", -1))

    def _tokenizer(self, trainer: L.Trainer):
        datamodule = trainer.datamodule
        tokenizer = self.tokenizer or (datamodule.tokenizer if isinstance(datamodule, DataModule) else None)
        if tokenizer is None:
            raise UserError("callbacks.harness: the data give no tokenizer (harness scoring is for language "
                            "models, e.g. data=text)")
        return tokenizer

    def score(self, trainer: L.Trainer, pl_module: L.LightningModule) -> Optional[dict[str, float]]:
        """Score the tasks now and log them (rank 0); returns the metrics there, None elsewhere."""
        from lmforge.evaluation import harness

        step = trainer.global_step
        if step == self._last_step:
            return None
        self._last_step = step
        with whole_parameters(trainer.model):
            results = harness.evaluate(task_model(pl_module), self._tokenizer(trainer), self.tasks,
                                       include_path=self.include_path, limit=self.limit,
                                       num_fewshot=self.num_fewshot, batch_size=self.batch_size, seed=self.seed)
        if results is None or not trainer.is_global_zero:
            return None
        metrics = {key: value for key, value in harness.metrics(results).items() if not key.endswith("_stderr")}
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=logger_step(trainer))
        # the latest scores end in the run's metrics.json (and can be a sweep's optimized_metric)
        trainer.callback_metrics.update({key: torch.tensor(value) for key, value in metrics.items()})
        self.scores.append((step, metrics))
        rank_zero_info(f"[harness @ step {step}]\n{harness.table(results)}")
        return metrics

    def _due(self, step: int) -> bool:
        """A multiple of every_n_steps was reached since the last scoring (or the start)."""
        return step // self.every_n_steps > self._last_step // self.every_n_steps

    def on_train_start(self, trainer, pl_module) -> None:
        if self._last_step < 0:  # a fresh run, or one resumed from a checkpoint without this callback
            self._last_step = trainer.global_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._due(trainer.global_step) and not trainer.enable_validation:
            self.score(trainer, pl_module)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        # Before on_validation_end, where checkpoints are written: they hold this scoring's step.
        if trainer.state.fn == TrainerFn.FITTING and not trainer.sanity_checking and self._due(trainer.global_step):
            self.score(trainer, pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        # Not on_fit_end: by then the strategy's teardown has moved the model off the accelerator.
        self.score(trainer, pl_module)
