"""KeepFreedMemory: once training starts, steps reuse the memory of the step before instead of
faulting in fresh pages (glibc's malloc). Each case runs in its own process: the setting is for life."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = r"""
import functools, resource, sys
import lightning as L, torch
from torch.utils.data import DataLoader
from lmforge.callbacks.heap import KeepFreedMemory
from lmforge.models.causal_lm import gpt2
from lmforge.modules.causal_lm import CausalLMModule

class Faults(L.Callback):
    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step == 10:
            self.start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        elif trainer.global_step == 30:
            print("faults per step", (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - self.start) / 20)

torch.manual_seed(0)
ids = torch.randint(0, 258, (1280, 65))
rows = [{"input_ids": r[:-1], "labels": r[1:]} for r in ids]  # activations of 32 x 64 x 512 floats: 4 MB
module = CausalLMModule(gpt2(vocab_size=258, block_size=64, n_layer=2, n_head=4, n_embd=128),
                        optimizer=functools.partial(torch.optim.AdamW, lr=1e-3))
callbacks = [Faults()] + ([KeepFreedMemory()] if sys.argv[1] == "keep" else [])
L.Trainer(max_steps=30, accelerator="cpu", devices=1, logger=False, callbacks=callbacks, enable_checkpointing=False,
          enable_progress_bar=False, enable_model_summary=False).fit(module, DataLoader(rows, batch_size=32))
"""


def faults_per_step(mode: str) -> float:
    proc = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return float(proc.stdout.split("faults per step")[-1])


def test_training_steps_stop_faulting_in_fresh_pages() -> None:
    default, kept = faults_per_step("default"), faults_per_step("keep")
    # glibc's default hands the blocks back and faults them in again, step after step (480-820 faults a
    # step here); kept, what remains is Python's own arenas (5-40).
    assert default > 100
    assert kept < default / 8
