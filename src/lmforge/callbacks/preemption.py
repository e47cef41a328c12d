"""Preemption and Ctrl-C: a checkpoint at the next step boundary, then a clean stop.

SIGTERM, SIGUSR1 and SIGUSR2 (what clusters send before they stop or requeue a job) mean
"preempted", SIGINT means "interrupted" (lmforge.signals). While the training loop runs, a signal is
only recorded; at the end of the current training step every rank agrees on it (so all ranks stop
together and none hangs), saves a checkpoint through `PeriodicCheckpoint.save_at_step_end` and asks the
Trainer to stop. The runner then records the status and exits 143 (preempted) or 130 (interrupted) —
after giving the signal to a handler that was there before (e.g. submitit's, which requeues the job).
"""

from __future__ import annotations

import signal
from typing import Any, Callable, Optional

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from lmforge import signals
from lmforge.callbacks.periodic_checkpoint import PeriodicCheckpoint
from lmforge.compat import lightning as lightning_compat

STATUS = signals.STATUS
EXIT_STATUS = signals.EXIT_STATUS


class Preemption(L.Callback):
    def __init__(self, checkpoint: PeriodicCheckpoint) -> None:
        self.checkpoint = checkpoint
        self.received: Optional[int] = None  # the signal number, once the run stopped for one
        self.status: Optional[str] = None  # "preempted" / "interrupted" once the run stopped for it
        self._previous: dict[int, Any] = {}

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # The handlers before Lightning's (which it installs later and removes at its teardown).
        if stage == "fit":
            self._previous = {signum: signal.getsignal(signum) for signum in STATUS}

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Installed here, after Lightning registered its own SIGTERM handler, which this replaces.
        signals.deferred = True
        for signum in STATUS:
            signal.signal(signum, signals.handle)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch,
                           batch_idx: int) -> None:
        received = signals.received if signals.deferred and signals.received else 0
        if trainer.world_size > 1:  # a signal may have reached one rank only
            received = int(trainer.strategy.reduce(torch.tensor(received, device=pl_module.device),
                                                   reduce_op="max"))
        if not received or self.status:
            return
        self.received = signals.received = received
        self.status = STATUS[signal.Signals(received)]
        self.checkpoint.save_at_step_end(trainer, batch_idx)  # at the epoch's end if this batch ends it
        trainer.should_stop = True
        # Lightning ends a stopped epoch as if it had run through: it validates at once and saves epoch-end
        # checkpoints. Those would say the epoch is done (a tie on step that resume=auto could take,
        # skipping the rest of the epoch) and log a validation the resumed run repeats when the epoch
        # really ends. So: no more validation in this run, and every ModelCheckpoint takes this step as saved.
        trainer.limit_val_batches = 0
        for callback in trainer.checkpoint_callbacks:
            if isinstance(callback, ModelCheckpoint):
                lightning_compat.set_last_saved(callback, trainer.global_step,
                                                lightning_compat.last_saved(callback)[1])

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit":
            self._leave_training()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._leave_training()  # (Lightning calls no teardown hook then)

    def _leave_training(self) -> None:
        """From here on a signal stops the process at once again (lmforge.signals)."""
        signals.deferred = False
        for signum, handler in self._previous.items():
            if handler is not None:
                signal.signal(signum, handler)

    def unhandled(self) -> Optional[signals.Signalled]:
        """A signal that arrived after the last training step (the loop had no step left to stop at)."""
        if signals.received and not self.status:
            return signals.Signalled(signals.received)
        return None

    def pass_on(self) -> None:
        """Give the signal to the handler installed before ours, when it is a Python function (e.g.
        submitit's checkpoint-and-requeue); it may exit the process itself."""
        previous: Callable | Any = self._previous.get(self.received)
        # getattr: a handler may be a builtin
        lightnings = str(getattr(previous, "__module__", "")).startswith("lightning")
        if (callable(previous) and previous is not signal.default_int_handler and not lightnings
                and not signals.is_ours(previous)):
            previous(self.received, None)
