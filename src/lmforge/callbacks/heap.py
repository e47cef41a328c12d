"""Keep freed memory in the process for the next step's tensors (glibc only): the page faults of
memory handed back to the system and taken again cost ~1.5 us per 4 KB page on a CPU."""

from __future__ import annotations

import ctypes

import lightning as L

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
KEEP = 1 << 30  # bytes: allocations up to this size come from the heap; free memory kept up to this much


def keep_freed_memory() -> bool:
    """Tell glibc's malloc to serve allocations up to 1 GiB from its heap and not to return free memory
    to the system below 1 GiB. By default it maps each big block anew (or trims it away once freed), so
    every training step faults in its activations and gradients page by page: 200-800 faults, ~1.5 us each,
    in a 45 ms step of the tiny GPT-2 on 2 cores (none kept). The process keeps its peak step's memory, which the next
    step needs anyway. False where there is no glibc (macOS, musl): nothing changes there."""
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library this process runs with
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, KEEP)) and bool(mallopt(M_TRIM_THRESHOLD, KEEP))


class KeepFreedMemory(L.Callback):
    """`keep_freed_memory()` when training starts: after the data is prepared (packing a corpus keeps
    glibc's default, which hands memory back), for the steps, whose allocations repeat."""

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        keep_freed_memory()
