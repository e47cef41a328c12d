"""`train/peak_mem_gb`: the most memory training has used so far, on the device it runs on."""

from __future__ import annotations

import resource
import sys

import lightning as L
import torch

from lmforge.loggers.cadence import OncePerWrittenStep

GB = 2**30


def peak_memory_gb(device: torch.device) -> float:
    """GiB: on a GPU the most the caching allocator has handed out on it (`torch.cuda.max_memory_allocated`);
    elsewhere the peak resident set of this process (`ru_maxrss`: KiB on Linux, bytes on macOS)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / GB
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / GB if sys.platform == "darwin" else peak * 1024 / GB


class PeakMemory(L.Callback):
    """Logs `train/peak_mem_gb` (see `peak_memory_gb`; on a CPU the whole process's peak, whatever it did
    before fitting included) on the steps the loggers write, this process's (rank 0's under DDP)."""

    def __init__(self) -> None:
        self._due = OncePerWrittenStep()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._due(trainer, trainer.global_step):
            pl_module.log("train/peak_mem_gb", peak_memory_gb(pl_module.device), on_step=True, on_epoch=False)
