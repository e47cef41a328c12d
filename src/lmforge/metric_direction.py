"""Whether lower or higher is better for a metric: one rule for the sweep summary, the Optuna sweeper
and `lmforge report`.

An explicit direction wins (Optuna's `hydra.sweeper.direction`, a run's `monitor_mode` for its
`monitor`, the report's `sort_order`); else the metric's name decides, word by word (`val/loss`,
`train_loss_epoch`, `val/accuracy`, `tokens_per_sec`); a name that says nothing gives None, and then
nothing is called best.
"""

from __future__ import annotations

import re
from typing import Any, Optional

# Words (or their beginnings: `acc` -> accuracy, `mem` -> memory) of names where lower is better.
LOWER_IS_BETTER = ("loss", "perplexity", "ppl", "bpb", "bits", "error", "err", "wer", "cer", "mse", "mae",
                   "nll", "time", "latency", "wait", "mem")
# ... and where higher is better; several words (`tokens_per_sec`) match as a run of words.
HIGHER_IS_BETTER = ("acc", "f1", "precision", "recall", "auc", "bleu", "rouge", "exact_match", "mfu",
                    "tokens_per_sec", "throughput", "samples_per_sec")
EXPLICIT = {"min": "min", "minimize": "min", "max": "max", "maximize": "max"}


def explicit_direction(direction: Any) -> Optional[str]:
    """'min' or 'max' for a configured direction (min/max, minimize/maximize, Optuna's list of
    directions: its first), None for anything else."""
    if isinstance(direction, (list, tuple)):
        direction = direction[0] if direction else None
    return EXPLICIT.get(str(direction).lower()) if direction is not None else None


def name_direction(metric: Optional[str]) -> Optional[str]:
    """'min' or 'max' from the metric's name, None when its words say nothing."""
    if not metric:
        return None
    words = [w for w in re.split(r"[^a-z0-9]+", metric.lower()) if w]
    for direction, vocabulary in (("min", LOWER_IS_BETTER), ("max", HIGHER_IS_BETTER)):
        if any(_contains(words, entry.split("_")) for entry in vocabulary):
            return direction
    return None


def direction(metric: Optional[str], explicit: Any = None) -> Optional[str]:
    """'min' or 'max': `explicit` where it is one, else from the metric's name; None when unknown."""
    return explicit_direction(explicit) or name_direction(metric)


def optuna_direction(direction: Optional[str]) -> Optional[str]:
    """'min'/'max' as Optuna and sweep.json write it: 'minimize'/'maximize'."""
    return {"min": "minimize", "max": "maximize"}.get(direction or "")


def _contains(words: list[str], entry: list[str]) -> bool:
    """`entry` (one or more words) occurs in `words`; its last word may be the beginning of a word."""
    for start in range(len(words) - len(entry) + 1):
        window = words[start:start + len(entry)]
        if window[:-1] == entry[:-1] and window[-1].startswith(entry[-1]):
            return True
    return False
