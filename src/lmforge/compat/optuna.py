"""Optuna's private names that lmforge relies on, each behind one small function."""

from __future__ import annotations

from typing import Any

DISTRIBUTION = "optuna"
CHECKED = ">=5.1,<5.2"


def storage(study: Any) -> Any:
    """The storage a study reads and writes (heartbeats, states and trials by id go through it)."""
    return study._storage


def trial_id(trial: Any) -> int:
    """The storage's id of a `Trial` or `FrozenTrial`: unique across studies, unlike its number."""
    return trial._trial_id


def open_trial(study: Any, number: int) -> Any:
    """The `optuna.Trial` numbered `number` in `study`, to report to from a process that did not ask it."""
    import optuna

    trial_id = study._storage.get_trial_id_from_study_id_trial_number(study._study_id, number)
    return optuna.Trial(study, trial_id)
