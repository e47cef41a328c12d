"""The one clock every training-speed benchmark reads, on both sides of a comparison (not a benchmark itself).

A `StepClock` takes `time.perf_counter()` at the end of each training step (after a CUDA sync, so it
times the work and not the kernel launches) with that step's token count, and leaves out the time
spent between `pause()` and `resume()` (validation). The lmforge side gets it as a Lightning callback
(`lightning_clock`, added with `+callbacks.step_clock._target_=_clock.lightning_clock`, benchmarks/ on
PYTHONPATH) that writes the stamps to a JSON file; a plain loop calls `step()` itself at the same point.
The benchmark computes the rate from those stamps with `rate()`: nothing of the code under test (the
Throughput callback, a loop's own timing) enters the figure. When a benchmark time-slices two processes
(each stopped while the other runs), `busy_rate()` also leaves out the intervals it kept a process
stopped: the clock saves its raw stamps and validation pauses, and announces with a `.ready` file beside
its stamps file that training is about to start.
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
        self.raw: list[float] = []  # the same stamps, validation included (perf_counter: one clock machine-wide)
        self.pauses: list[tuple[float, float]] = []
        self._paused_total = 0.0
        self._paused_at: Optional[float] = None

    def step(self, tokens: int) -> None:
        _sync()
        now = time.perf_counter()
        self.raw.append(now)
        self.stamps.append(now - self._paused_total)
        self.tokens.append(int(tokens))

    def pause(self) -> None:
        _sync()
        self._paused_at = time.perf_counter()

    def resume(self) -> None:
        if self._paused_at is not None:
            now = time.perf_counter()
            self._paused_total += now - self._paused_at
            self.pauses.append((self._paused_at, now))
            self._paused_at = None

    @staticmethod
    def announce(path: str | Path) -> None:
        """Say that training starts now (a time-slicing benchmark waits for both sides to get here)."""
        Path(f"{path}.ready").touch()

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps({"stamps": self.stamps, "tokens": self.tokens, "raw": self.raw,
                                          "pauses": self.pauses}))


def load(path: str | Path) -> tuple[list[float], list[int]]:
    data = json.loads(Path(path).read_text())
    return data["stamps"], data["tokens"]


def rate(stamps: list[float], tokens: list[int], skip: int) -> float:
    """Tokens per second of steps skip+2..N: their tokens over the time from the end of step skip+1 to the
    end of step N (the first `skip` steps, compilation and warm-up, left out; validation already excluded)."""
    if len(stamps) < skip + 2:
        raise ValueError(f"{len(stamps)} steps timed: need more than {skip + 1}")
    return sum(tokens[skip + 1:]) / (stamps[-1] - stamps[skip])


def busy_time(start: float, end: float, excluded: list[tuple[float, float]]) -> float:
    """Seconds of [start, end] outside the union of the `excluded` intervals."""
    total, cursor = 0.0, start
    for a, b in sorted((max(a, start), min(b, end)) for a, b in excluded if b > start and a < end):
        total += max(0.0, a - cursor)
        cursor = max(cursor, b)
    return total + max(0.0, end - cursor)


def busy_rate(path: str | Path, skip: int, stopped: list[tuple[float, float]]) -> float:
    """`rate()` of a saved clock whose process was also kept `stopped` in these intervals (perf_counter
    seconds): the tokens of steps skip+2..N over the time between those steps' ends outside validation
    and outside the stops."""
    data = json.loads(Path(path).read_text())
    raw, tokens = data["raw"], data["tokens"]
    if len(raw) < skip + 2:
        raise ValueError(f"{len(raw)} steps timed: need more than {skip + 1}")
    return sum(tokens[skip + 1:]) / busy_time(raw[skip], raw[-1], [tuple(p) for p in data["pauses"]] + stopped)


def lightning_clock(path: str):
    """A Lightning callback running a StepClock, saved to `path` when training ends (rank 0's steps)."""
    import lightning as L

    class LightningClock(L.Callback):
        def __init__(self) -> None:
            self.clock = StepClock()

        def on_train_start(self, trainer, pl_module) -> None:
            if trainer.is_global_zero:
                self.clock.announce(path)

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
