"""Learning-rate schedules as factories: `scheduler(optimizer, total_steps)` -> LambdaLR.

The config gives the shape (`_partial_: true`); the module supplies the optimizer and the run's
total number of optimizer steps (None when unknown, e.g. a time-limited run: no decay then).
"""

from __future__ import annotations

import math
from typing import Optional

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def _warmup(step: int, warmup_steps: int) -> float:
    return (step + 1) / warmup_steps if step < warmup_steps else 1.0


def constant(optimizer: Optimizer, total_steps: Optional[int] = None, warmup_steps: int = 0) -> LambdaLR:
    return LambdaLR(optimizer, lambda step: _warmup(step, warmup_steps))


def cosine_warmup(optimizer: Optimizer, total_steps: Optional[int] = None, warmup_steps: int = 100,
                  min_lr_ratio: float = 0.1) -> LambdaLR:
    """Linear warmup to the base lr, then cosine decay to `min_lr_ratio` times it at `total_steps`."""
    def factor(step: int) -> float:
        if step < warmup_steps or not total_steps:
            return _warmup(step, warmup_steps)
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return LambdaLR(optimizer, factor)


def linear_warmup(optimizer: Optimizer, total_steps: Optional[int] = None, warmup_steps: int = 100,
                  min_lr_ratio: float = 0.0) -> LambdaLR:
    """Linear warmup, then linear decay to `min_lr_ratio` times the base lr at `total_steps`."""
    def factor(step: int) -> float:
        if step < warmup_steps or not total_steps:
            return _warmup(step, warmup_steps)
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return 1 - (1 - min_lr_ratio) * progress
    return LambdaLR(optimizer, factor)
