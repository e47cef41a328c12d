"""Learning-rate schedules as factories: `scheduler(optimizer, budget)` -> LambdaLR.

The config gives the shape (`_partial_: true`); the module supplies the optimizer and the run's
`Budget` (lmforge.optim.budget): steps and/or seconds. Each schedule is a linear warmup over
`warmup_steps` times a shape of the fraction of the budget spent (at the end of each step), so a run
limited by `max_time` decays as surely as one limited by `max_steps`, and its last step runs at the
schedule's floor. Without a known budget the shapes hold their peak.
The factors come from (step, elapsed time) through a `Budget` that keeps state: its fraction never goes
back, and it times the recent steps. That state is not saved in checkpoints: a resumed run starts it
afresh from its restored step count and Timer, which gives the same factors for a steps budget; for a
time budget they may differ where a slow patch before the stop had moved the schedule ahead.
"""

from __future__ import annotations

import math
from typing import Annotated, Callable, Literal, Optional

from pydantic import Field
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from lmforge.optim.budget import Budget

DECAY_SHAPES = {
    "linear": lambda x: x,
    "sqrt": math.sqrt,  # "1 - sqrt" cooldown (Hagele et al., 2024): lower loss than linear for WSD
    "cosine": lambda x: 0.5 * (1 - math.cos(math.pi * x)),
}


def _warmup(step: int, warmup_steps: int) -> float:
    return (step + 1) / warmup_steps if step < warmup_steps else 1.0


def _schedule(optimizer: Optimizer, budget: Optional[Budget], warmup_steps: int,
              shape: Callable[[float], float], after_warmup: bool = False) -> LambdaLR:
    """LambdaLR of warmup(step) * shape(fraction of the budget spent) (shape(0) when it is unknown).
    `after_warmup`: the fraction counts from the end of warmup (known for a steps budget only), as a
    decay that starts when warmup ends is usually defined."""
    budget = budget or Budget()
    start = min(warmup_steps / budget.max_steps, 0.99) if after_warmup and budget.max_steps else 0.0

    def factor(step: int) -> float:
        fraction = budget.fraction(step)
        fraction = 0.0 if fraction is None else max(0.0, fraction - start) / (1 - start)
        return _warmup(step, warmup_steps) * shape(fraction)
    return LambdaLR(optimizer, factor)


# The signatures are the schema: config validation checks these ranges before a run starts.
Steps = Annotated[int, Field(ge=0)]
Ratio = Annotated[float, Field(ge=0, le=1)]


def constant(optimizer: Optimizer, budget: Optional[Budget] = None, warmup_steps: Steps = 0) -> LambdaLR:
    """Linear warmup, then the base lr."""
    return _schedule(optimizer, budget, warmup_steps, lambda fraction: 1.0)


def cosine_warmup(optimizer: Optimizer, budget: Optional[Budget] = None, warmup_steps: Steps = 100,
                  min_lr_ratio: Ratio = 0.1) -> LambdaLR:
    """Linear warmup, then a cosine from the base lr to `min_lr_ratio` times it over the rest of the budget."""
    return _schedule(optimizer, budget, warmup_steps,
                     lambda f: min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * f)), True)


def linear_warmup(optimizer: Optimizer, budget: Optional[Budget] = None, warmup_steps: Steps = 100,
                  min_lr_ratio: Ratio = 0.0) -> LambdaLR:
    """Linear warmup, then a linear decay to `min_lr_ratio` times the base lr over the rest of the budget."""
    return _schedule(optimizer, budget, warmup_steps, lambda f: 1 - (1 - min_lr_ratio) * f, True)


def wsd(optimizer: Optimizer, budget: Optional[Budget] = None, warmup_steps: Steps = 100,
        decay_fraction: Annotated[float, Field(gt=0, le=1)] = 0.2, min_lr_ratio: Ratio = 0.0,
        decay_shape: Literal["linear", "sqrt", "cosine"] = "linear") -> LambdaLR:
    """Warmup-stable-decay: linear warmup, the base lr, then over the last `decay_fraction` of the
    budget a decay (`linear`, `sqrt` = 1-sqrt, or `cosine`) to `min_lr_ratio` times the base lr."""
    decay = DECAY_SHAPES[decay_shape]

    def shape(fraction: float) -> float:
        into_decay = (fraction - (1 - decay_fraction)) / decay_fraction
        return 1.0 if into_decay <= 0 else 1 - (1 - min_lr_ratio) * decay(min(1.0, into_decay))
    return _schedule(optimizer, budget, warmup_steps, shape)
