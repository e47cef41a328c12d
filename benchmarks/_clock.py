"""The one clock every training-speed benchmark reads, on both sides of a comparison (not a benchmark itself).

A `StepClock` takes `time.perf_counter()` at the end of each training step (after a CUDA sync, so it
times the work and not the kernel launches) with that step's token count, and leaves out the time
spent between `pause()` and `resume()` (validation). The lmforge side gets it as a Lightning callback
(`lightning_clock`, added with `+callbacks.step_clock._target_=_clock.lightning_clock`, benchmarks/ on
PYTHONPATH) that writes the stamps to a JSON file; a plain loop calls `step()` itself at the same point.
The benchmark computes the rate from those stamps with `rate()`: nothing of the code under test (the
Throughput callback, a loop's own timing) enters the figure.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional


def _sync() -> None:
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


class StepClock:
    """Stamps (seconds, validation excluded) and token counts at the end of each training step."""

    def __init__(self) -> None:
        self.stamps: list[float] = []
        self.tokens: list[int] = []
        self._paused_total = 0.0
        self._paused_at: Optional[float] = None

    def step(self, tokens: int) -> None:
        _sync()
        self.stamps.append(time.perf_counter() - self._paused_total)
        self.tokens.append(int(tokens))

    def pause(self) -> None:
        _sync()
        self._paused_at = time.perf_counter()

    def resume(self) -> None:
        if self._paused_at is not None:
            self._paused_total += time.perf_counter() - self._paused_at
            self._paused_at = None

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps({"stamps": self.stamps, "tokens": self.tokens}))


def load(path: str | Path) -> tuple[list[float], list[int]]:
    data = json.loads(Path(path).read_text())
    return data["stamps"], data["tokens"]


def rate(stamps: list[float], tokens: list[int], skip: int) -> float:
    """Tokens per second of steps skip+2..N: their tokens over the time from the end of step skip+1 to the
    end of step N (the first `skip` steps, compilation and warm-up, left out; validation already excluded)."""
    if len(stamps) < skip + 2:
        raise ValueError(f"{len(stamps)} steps timed: need more than {skip + 1}")
    return sum(tokens[skip + 1:]) / (stamps[-1] - stamps[skip])


def lightning_clock(path: str):
    """A Lightning callback running a StepClock, saved to `path` when training ends (rank 0's steps)."""
    import lightning as L

    class LightningClock(L.Callback):
        def __init__(self) -> None:
            self.clock = StepClock()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            input_ids = batch["input_ids"] if isinstance(batch, dict) else batch[0]
            self.clock.step(input_ids.numel() * trainer.world_size)  # all ranks' tokens

        def on_validation_start(self, trainer, pl_module) -> None:
            self.clock.pause()

        def on_validation_end(self, trainer, pl_module) -> None:
            self.clock.resume()

        def on_train_end(self, trainer, pl_module) -> None:
            if trainer.is_global_zero:
                self.clock.save(path)

    return LightningClock()
