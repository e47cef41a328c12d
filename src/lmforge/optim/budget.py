"""The training budget a learning-rate schedule is laid out over: optimizer steps, seconds, or both.

A run ends at `trainer.max_steps` or `trainer.max_time`, whichever comes first, so a schedule keyed to
`Budget.fraction(step)` (the larger of the two fractions spent) always finishes its decay, also when a
slow machine makes time run out first. The seconds are those of Lightning's own `Timer` callback (which
`max_time` installs): it counts training and validation time, and a resumed run restores it from the
checkpoint, so the schedule continues where it stopped.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Optional

SHORT_FRACTION = 0.02  # of a time budget, the least it is counted short by (see Budget.fraction)
RECENT_STEPS = 5  # step times the recent average is the median of (one slow step, a validation, moves it not)


@dataclass
class Budget:
    """`max_steps` optimizer steps and/or `max_seconds` of training, `elapsed()` seconds spent so far."""

    max_steps: Optional[int] = None
    max_seconds: Optional[float] = None
    elapsed: Optional[Callable[[], float]] = None
    # What fraction() has seen: the last (step, elapsed), recent step times, the most spent so far.
    _last: Optional[tuple[int, float]] = field(default=None, init=False, repr=False, compare=False)
    _recent: deque = field(default_factory=lambda: deque(maxlen=RECENT_STEPS), init=False, repr=False,
                           compare=False)
    _spent: float = field(default=0.0, init=False, repr=False, compare=False)
    _after_first_step: Optional[float] = field(default=None, init=False, repr=False, compare=False)

    def fraction(self, step: int) -> Optional[float]:
        """How much of the budget will be spent when optimizer step `step` (0-based) ends, in [0, 1]:
        (step + 1) / max_steps, or the elapsed time plus one average step so far over max_seconds,
        whichever is larger. So the last step of a run, whatever ends it, runs at the end of the
        schedule. None when the run has no end known in advance (a schedule then holds its peak).
        The time budget is counted short by two average steps or 2 % of it, whichever is more, so that
        a slow step or a pause near the end (a busy machine) still leaves the run at the schedule's floor.
        The average step is the larger of the run's (without a fresh run's first step, mostly set-up) and
        the last few steps' (a run resumed on a slower or busier machine). The fraction never goes back:
        a slow patch that passes moves the schedule ahead, but the lr does not climb again."""
        parts = []
        if self.max_steps:
            parts.append((step + 1) / self.max_steps)
        if self.max_seconds and self.elapsed is not None and step:
            elapsed = self.elapsed()
            # A fresh run's first step is set-up too (asked again at step 1: the same answer).
            fresh_start = step == 1 and (self._last is None or self._after_first_step is not None)
            recent = self._recent_step_time(step, elapsed)
            if fresh_start:
                self._after_first_step = elapsed
                parts.append(0.0)
            else:
                average = max(self._run_step_time(step, elapsed), recent)
                margin = max(2 * average, SHORT_FRACTION * self.max_seconds)
                parts.append((elapsed + average) / max(self.max_seconds - margin, 1e-9))
        elif self.max_seconds and self.elapsed is not None:
            parts.append(0.0)
        if not parts:
            return None
        self._spent = max(self._spent, min(1.0, max(parts)))
        return self._spent

    def _run_step_time(self, step: int, elapsed: float) -> float:
        """The run's average time per step; in a fresh run, without its first step, whose time is mostly
        set-up (torch.compile's compilation, first batches): counted in, one compiled step of a minute's
        budget read as the average would end the schedule at once."""
        if self._after_first_step is None:  # resumed: the restored time over the steps so far
            return elapsed / step
        return (elapsed - self._after_first_step) / (step - 1)

    def _recent_step_time(self, step: int, elapsed: float) -> float:
        """The median time per step between the last few calls (0 until there are two)."""
        if self._last is not None and step > self._last[0]:
            self._recent.append((elapsed - self._last[1]) / (step - self._last[0]))
        self._last = (step, elapsed)
        return statistics.median(self._recent) if self._recent else 0.0

    @classmethod
    def from_trainer(cls, trainer) -> "Budget":
        """The budget of a Lightning Trainer: its estimated optimizer steps (max_steps, or epochs x
        batches) and the duration of its Timer callback (max_time). Under DDP every rank reads rank
        0's clock, so all ranks keep the same learning rate."""
        from lightning.pytorch.callbacks import Timer

        total = trainer.estimated_stepping_batches
        max_steps = int(total) if math.isfinite(total) and total > 0 else None
        timer = next((c for c in trainer.callbacks if isinstance(c, Timer) and c.time_remaining() is not None), None)
        if timer is None:
            return cls(max_steps=max_steps)
        elapsed = timer.time_elapsed
        if trainer.world_size > 1:
            def elapsed() -> float:
                return float(trainer.strategy.broadcast(timer.time_elapsed()))
        return cls(max_steps=max_steps, max_seconds=timer.time_elapsed() + timer.time_remaining(), elapsed=elapsed)
