"""Preemption and Ctrl-C: a checkpoint at the next step boundary, then a clean stop.

SIGTERM, SIGUSR1 and SIGUSR2 (what clusters send before they stop or requeue a job) mean
"preempted", SIGINT means "interrupted". The handler only records the signal; at the end of the
current training step every rank agrees on it (so all ranks stop together and none hangs), saves a
checkpoint through `PeriodicCheckpoint.save_at_step_end` and asks the Trainer to stop. The runner then records
the status and exits 143 (preempted) or 130 (interrupted) — after giving the signal to a handler
that was there before (e.g. submitit's, which requeues the job).
"""

from __future__ import annotations

import signal
from typing import Any, Callable, Optional

import lightning as L
import torch

from lmforge.callbacks.periodic_checkpoint import PeriodicCheckpoint

STATUS = {signal.SIGTERM: "preempted", signal.SIGUSR1: "preempted", signal.SIGUSR2: "preempted",
          signal.SIGINT: "interrupted"}
EXIT_STATUS = {"preempted": 143, "interrupted": 130}


class Preemption(L.Callback):
    def __init__(self, checkpoint: PeriodicCheckpoint) -> None:
        self.checkpoint = checkpoint
        self.received: Optional[int] = None  # the signal number, once one arrived
        self.status: Optional[str] = None  # "preempted" / "interrupted" once the run stopped for it
        self._previous: dict[int, Any] = {}

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Installed here, after Lightning registered its own SIGTERM handler, which this replaces.
        for signum in STATUS:
            self._previous[signum] = signal.signal(signum, self._record)

    def _record(self, signum: int, frame: Any) -> None:
        self.received = self.received or signum

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch,
                           batch_idx: int) -> None:
        received = self.received or 0
        if trainer.world_size > 1:  # a signal may have reached one rank only
            received = int(trainer.strategy.reduce(torch.tensor(received, device=pl_module.device),
                                                   reduce_op="max"))
        if not received or self.status:
            return
        self.received = received
        self.status = STATUS[signal.Signals(received)]
        self.checkpoint.save_at_step_end(trainer, batch_idx)  # at the epoch's end if this batch ends it
        trainer.should_stop = True

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def pass_on(self) -> None:
        """Give the signal to the handler installed before ours, when it is a Python function (e.g.
        submitit's checkpoint-and-requeue); it may exit the process itself."""
        previous: Callable | Any = self._previous.get(self.received)
        # getattr: a handler may be a builtin
        lightnings = str(getattr(previous, "__module__", "")).startswith("lightning")
        if callable(previous) and previous is not signal.default_int_handler and not lightnings:
            previous(self.received, None)
