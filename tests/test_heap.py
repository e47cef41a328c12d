"""KeepFreedMemory: once training starts, steps reuse the memory of the step before instead of
faulting in fresh pages (glibc's malloc). Each case runs in its own process: the setting is for life."""

from __future__ import annotations

import subprocess
import sys

# A step whose tensors are 64 MB each: above glibc's 32 MB ceiling for its adaptive mmap threshold, so by
# default every one is mapped anew and faulted in page by page (16,384 pages), every step, deterministically.
# The tiny GPT-2's steps show the same in bursts (50-800 faults a step, depending on the heap's history).
SCRIPT = r"""
import resource, statistics, sys
import lightning as L, torch
from torch.utils.data import DataLoader
from lmforge.callbacks.heap import KeepFreedMemory

class Scale(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))

    def training_step(self, batch):
        return (batch[0] * self.scale).square().mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=1e-3)

class Faults(L.Callback):
    # the median step's: kept, the heap still grows at a few early steps (fragmentation), then holds
    def __init__(self):
        self.counts = []

    def on_train_batch_end(self, trainer, *args):
        self.counts.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt)

    def on_train_end(self, *args):
        print("faults per step", statistics.median(b - a for a, b in zip(self.counts[3:], self.counts[4:])))

torch.set_num_threads(1)
rows = [torch.full((1 << 24,), 0.5)] * 10  # 16 M floats: 64 MB a batch
callbacks = [Faults()] + ([KeepFreedMemory()] if sys.argv[1] == "keep" else [])
L.Trainer(max_steps=10, accelerator="cpu", devices=1, logger=False, callbacks=callbacks, enable_checkpointing=False,
          enable_progress_bar=False, enable_model_summary=False).fit(Scale(), DataLoader(rows, batch_size=1))
"""


def faults_per_step(mode: str) -> float:
    proc = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return float(proc.stdout.split("faults per step")[-1])


def test_training_steps_stop_faulting_in_fresh_pages() -> None:
    default, kept = faults_per_step("default"), faults_per_step("keep")
    # By default each 64 MB tensor of a step is faulted in afresh (the batch, its product, its square, the
    # gradients: > 16,384 pages each); kept, most steps reuse the pages of the steps before and fault none.
    assert default > 4 * 16384
    assert kept < 16384
