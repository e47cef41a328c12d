"""The one clock every training-speed benchmark reads, on both sides of a comparison (not a benchmark itself).

A `StepClock` takes `time.perf_counter()` at the end of each training step (after a CUDA sync, so it
times the work and not the kernel launches) with that step's token count, and leaves out the time
spent between `pause()` and `resume()` (validation). The lmforge side gets it as a Lightning callback
(`lightning_clock`, added with `+callbacks.step_clock._target_=_clock.lightning_clock`, benchmarks/ on
PYTHONPATH) that writes the stamps to a JSON file; a plain loop calls `step()` itself at the same point.
The benchmark computes the rate from those stamps with `StepClock.rate()` (`StepClock.load(path)` reads a
saved clock back): nothing of the code under test (the Throughput callback, a loop's own timing) enters
the figure. When a benchmark time-slices two processes (each stopped while the other runs), `rate()` also
leaves out the intervals it kept a process stopped; the clock announces with a `.ready` file beside its
stamps file that training is about to start.
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
    """Stamps (perf_counter seconds: one clock machine-wide) and token counts at the end of each training
    step, and the validation pauses between them."""

    def __init__(self) -> None:
        self.stamps: list[float] = []
        self.tokens: list[int] = []
        self.pauses: list[tuple[float, float]] = []
        self.started: Optional[float] = None  # when training started: the first step's time is stamps[0] - started
        self._paused_at: Optional[float] = None

    def step(self, tokens: int) -> None:
        _sync()
        self.stamps.append(time.perf_counter())
        self.tokens.append(int(tokens))

    def pause(self) -> None:
        _sync()
        self._paused_at = time.perf_counter()

    def resume(self) -> None:
        if self._paused_at is not None:
            self.pauses.append((self._paused_at, time.perf_counter()))
            self._paused_at = None

    @staticmethod
    def announce(path: str | Path) -> None:
        """Say that training starts now (a time-slicing benchmark waits for both sides to get here)."""
        Path(f"{path}.ready").touch()

    def rate(self, skip: int, stopped: list[tuple[float, float]] = ()) -> float:
        """Tokens per second of steps skip+2..N: their tokens over the time from the end of step skip+1 to
        the end of step N, validation pauses and the `stopped` intervals (a time-slicing benchmark's)
        left out; the first `skip` steps (compilation, warm-up) left out too."""
        if len(self.stamps) < skip + 2:
            raise ValueError(f"{len(self.stamps)} steps timed: need more than {skip + 1}")
        busy = busy_time(self.stamps[skip], self.stamps[-1], self.pauses + list(stopped))
        return sum(self.tokens[skip + 1:]) / busy

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps({"stamps": self.stamps, "tokens": self.tokens, "pauses": self.pauses,
                                          "started": self.started}))

    @classmethod
    def load(cls, path: str | Path) -> "StepClock":
        clock, data = cls(), json.loads(Path(path).read_text())
        clock.stamps, clock.tokens, clock.pauses = data["stamps"], data["tokens"], [tuple(p) for p in data["pauses"]]
        clock.started = data.get("started")
        return clock


def busy_time(start: float, end: float, excluded: list[tuple[float, float]]) -> float:
    """Seconds of [start, end] outside the union of the `excluded` intervals."""
    total, cursor = 0.0, start
    for a, b in sorted((max(a, start), min(b, end)) for a, b in excluded if b > start and a < end):
        total += max(0.0, a - cursor)
        cursor = max(cursor, b)
    return total + max(0.0, end - cursor)


def lightning_clock(path: str):
    """A Lightning callback running a StepClock, saved to `path` when training ends (rank 0's steps)."""
    import lightning as L

    class LightningClock(L.Callback):
        def __init__(self) -> None:
            self.clock = StepClock()

        def on_train_start(self, trainer, pl_module) -> None:
            self.clock.started = time.perf_counter()
            if trainer.is_global_zero:
                self.clock.announce(path)

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            if isinstance(batch, dict) and "pixel_values" in batch:  # images: the count is of images
                count = len(batch["pixel_values"])
            else:
                count = (batch["input_ids"] if isinstance(batch, dict) else batch[0]).numel()
            self.clock.step(count * trainer.world_size)  # all ranks' tokens (images)

        def on_validation_start(self, trainer, pl_module) -> None:
            self.clock.pause()

        def on_validation_end(self, trainer, pl_module) -> None:
            self.clock.resume()

        def on_train_end(self, trainer, pl_module) -> None:
            if trainer.is_global_zero:
                self.clock.save(path)

    return LightningClock()
