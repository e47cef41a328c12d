"""`train/data_wait`: the share of the training loop's time spent between steps, waiting for the next batch."""

from __future__ import annotations

import time
from typing import Optional

import lightning as L

from lmforge.loggers.cadence import OncePerWrittenStep


class DataWait(L.Callback):
    """Logs `train/data_wait`, the time from the end of one training batch (`on_train_batch_end`) to the
    start of the next (`on_train_batch_start`) over the time from one batch start to the next, summed over
    the batches since it was last logged: near 0 when the data keeps up, near 1 when the model waits for it.

    That gap is where the loop fetches the next batch (the DataLoader's collate, or its workers falling
    behind); the loop's own work between batches (writing the logs, the callbacks that run after this one,
    a checkpoint) falls in it too. A gap with a validation in it is left out. Logged only on the steps the
    loggers write; host clocks only (no device synchronisation): on a GPU, a step whose kernels are still
    queued counts as step time, the gap as time the device may sit idle. lmforge adds it after the
    configured callbacks, so their end-of-batch work (Throughput's synchronisation) counts as step time.
    """

    def __init__(self) -> None:
        self._start: Optional[float] = None  # when the previous batch started
        self._end: Optional[float] = None  # when the previous batch ended
        self._wait = self._period = 0.0
        self._due = OncePerWrittenStep()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        now = time.perf_counter()
        if self._start is not None and self._end is not None:
            self._wait += now - self._end
            self._period += now - self._start
        self._start, self._end = now, None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step  # optimizer steps: log once per step, on the steps the loggers write
        if self._period > 0 and self._due(trainer, step):
            pl_module.log("train/data_wait", self._wait / self._period, on_step=True, on_epoch=False)
            self._wait = self._period = 0.0
        self._end = time.perf_counter()

    def on_validation_start(self, trainer, pl_module) -> None:
        self._start = self._end = None  # the gap around a validation is not waiting for data

    def on_train_end(self, trainer, pl_module) -> None:
        self._start = self._end = None
