"""Checkpoints every N steps and/or every M minutes, independent of validation, keeping the last K."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Annotated, Optional

import lightning as L
from pydantic import Field

from lmforge.compat import lightning as lightning_compat
from lmforge.loggers.cadence import written_step
from lmforge.runs.checkpoints import checkpoint_files

PREFIX = "step-"
PENDING = ".pending"


class PeriodicCheckpoint(L.Callback):
    """Save `<dirpath>/step-<global step>.ckpt` when `every_n_steps` steps or `every_n_minutes`
    minutes have passed since the last one (either trigger; null disables it), keeping the newest
    `keep`. Written for both triggers at once: Lightning's ModelCheckpoint takes only one of them
    per instance, and two instances would each keep their own K files."""

    def __init__(self, dirpath: str, every_n_steps: Optional[Annotated[int, Field(ge=1)]] = None,
                 every_n_minutes: Optional[Annotated[float, Field(gt=0)]] = None,
                 keep: Annotated[int, Field(ge=1)] = 2) -> None:
        self.dirpath = Path(dirpath)
        self.every_n_steps = every_n_steps
        self.every_n_minutes = every_n_minutes
        self.keep = keep
        self._last_time = time.monotonic()
        self._last_step = -1
        self._due: Optional[str] = None  # "validation end" / "epoch end": a save deferred to then
        self.saved: Optional[Path] = None  # the newest checkpoint this callback wrote
        self._pending: Optional[Path] = None  # written, not yet under its name (see `save_at_step_end`)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._last_time = time.monotonic()
        self._last_step = trainer.global_step
        if trainer.is_global_zero:  # left by a killed attempt: never published, never resumed from
            for stale in self.dirpath.glob(f".{PREFIX}*{PENDING}"):
                stale.unlink(missing_ok=True)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        by_steps = self.every_n_steps and step % self.every_n_steps == 0
        by_time = bool(self.every_n_minutes) and time.monotonic() - self._last_time >= 60 * self.every_n_minutes
        if self.every_n_minutes and trainer.world_size > 1:
            # Every rank saves when any rank's clock says so (their clocks start apart): a save is collective.
            # Asked on the logged steps only, the same on every rank: one all-reduce (and sync) per N steps.
            by_time = written_step(trainer, step) and trainer.strategy.reduce_boolean_decision(by_time, all=False)
        if step != self._last_step and (by_steps or by_time):
            self.save_at_step_end(trainer, batch_idx)

    def save_at_step_end(self, trainer: L.Trainer, batch_idx: int) -> None:
        """Save now, or after the validation that follows this batch, or at the epoch's end when the
        batch is the epoch's last. Lightning 2.6 restores a checkpoint taken between a batch and its
        validation with that validation skipped (its progress is fast-forwarded), and one taken
        between an epoch's last batch and the epoch's end as a finished epoch with its counters one
        apart (a second resume of that run then skips an epoch). After them it resumes exactly."""
        if batch_idx + 1 >= trainer.num_training_batches:
            self._due = "epoch end"
        elif lightning_compat.validation_follows_batch(trainer):
            self._due = "validation end"
        else:
            self.save(trainer)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        self._publish(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._publish(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._due == "validation end" and not trainer.sanity_checking:
            self.save(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._publish(trainer)
        if self._due:
            self.save(trainer)

    def save(self, trainer: L.Trainer) -> Path:
        """Save a checkpoint of the current step now (every rank must call it) under a hidden name, which
        `_publish` at the next hook turns into its own: what the step still writes after this hook
        (Lightning logs its metrics row after on_train_batch_end; best.ckpt and last.ckpt are saved by
        callbacks Lightning runs after this one) is on disk before a resume can take this checkpoint (a
        kill in between resumes from the one before, as exactly)."""
        path = self.dirpath / f"{PREFIX}{trainer.global_step:07d}.ckpt"
        trainer.save_checkpoint(_hidden(path))
        self.saved, self._due, self._pending = path, None, path
        self._last_time, self._last_step = time.monotonic(), trainer.global_step
        return path

    def _publish(self, trainer: L.Trainer) -> None:
        """Give the pending checkpoint its name, once the loggers have this step's rows on disk, and prune
        old ones."""
        if self._pending is None:
            return
        path, self._pending = self._pending, None
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.save()
            os.replace(_hidden(path), path)
            periodic = [f for f in checkpoint_files(self.dirpath) if f.name.startswith(PREFIX)]
            for old in sorted(periodic)[: -self.keep]:
                old.unlink(missing_ok=True)


def _hidden(path: Path) -> Path:
    """Where the checkpoint for `path` waits to be published (hidden: resume and pruning skip it)."""
    return path.with_name(f".{path.name}{PENDING}")
