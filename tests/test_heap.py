"""KeepFreedMemory: once training starts, steps reuse the memory of the step before instead of
faulting in fresh pages (glibc's malloc). One new process trains first with glibc's default, then with
the callback: the setting is for the rest of the process's life, so in that order."""

from __future__ import annotations

import subprocess
import sys

# A step whose tensors are 64 MB each: above glibc's 32 MB ceiling for its adaptive mmap threshold, so by
# default every one is mapped anew and faulted in page by page (16,384 pages), every step, deterministically.
# The tiny GPT-2's steps show the same in bursts (50-800 faults a step, depending on the heap's history).
SCRIPT = r"""
import resource, statistics
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

    def median(self):
        return statistics.median(b - a for a, b in zip(self.counts[3:], self.counts[4:]))

torch.set_num_threads(1)
rows = [torch.full((1 << 24,), 0.5)] * 10  # 16 M floats: 64 MB a batch
for name, extra in (("default", []), ("kept", [KeepFreedMemory()])):
    faults = Faults()
    L.Trainer(max_steps=10, accelerator="cpu", devices=1, logger=False, callbacks=[faults, *extra],
              enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
              ).fit(Scale(), DataLoader(rows, batch_size=1))
    print(name, faults.median())
"""


def faults_per_step() -> dict[str, float]:
    """The median step's page faults, with glibc's default and with the callback."""
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return {name: float(value) for name, value in (line.split() for line in proc.stdout.splitlines()[-2:])}


def test_training_steps_stop_faulting_in_fresh_pages() -> None:
    faults = faults_per_step()
    default, kept = faults["default"], faults["kept"]
    # By default each 64 MB tensor of a step is faulted in afresh (the batch, its product, its square, the
    # gradients: > 16,384 pages each); kept, most steps reuse the pages of the steps before and fault none.
    assert default > 4 * 16384
    assert kept < 16384
