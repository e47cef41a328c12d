"""A grid sweep launched again into its directory: which jobs it would run, and whether they are the
earlier sweep's. Job N's directory holds job N's run; a changed grid would give it other parameters."""

from __future__ import annotations

from typing import Optional

from omegaconf import DictConfig, OmegaConf

from lmforge.runs.directory import settings


def grid_jobs(config: DictConfig) -> Optional[list[list[str]]]:
    """Each job's overrides, in job order, as Hydra's BasicSweeper makes them (None if it cannot be told
    here, e.g. a `glob()` that needs the config loader)."""
    from lmforge.compat import hydra as hydra_compat

    params = OmegaConf.select(config, "hydra.sweeper.params") or {}
    arguments = [f"{key}={value}" for key, value in params.items()] + list(config.hydra.overrides.task)
    try:
        return hydra_compat.grid_jobs(arguments)
    except Exception:  # noqa: BLE001 - Hydra's own parse reports it, in its own words, when the sweep starts
        return None


def changed_job(summary: dict, config: DictConfig, swept: list[str]) -> Optional[str]:
    """The first job of the earlier sweep `summary` that this launch would run with other parameters
    (described in words), else None: a grid extended with new jobs changes none of the earlier ones."""
    if sorted(summary.get("params") or []) != sorted(swept):
        return f"it swept {', '.join(summary.get('params') or []) or 'nothing'}, this launch {', '.join(swept)}"
    jobs = grid_jobs(config)
    if jobs is None:
        return None
    for row in summary.get("jobs", []):
        number = row.get("job")
        if not isinstance(number, int) or number >= len(jobs):
            continue
        before, now = _values(row.get("overrides") or [], swept), _values(jobs[number], swept)
        if before != now:
            return (f"job {number} was {' '.join(f'{k}={v}' for k, v in before.items())}, "
                    f"now {' '.join(f'{k}={v}' for k, v in now.items())}")
    return None


def _values(overrides: list[str], keys: list[str]) -> dict[str, str]:
    """The values `overrides` give the swept `keys` (resume/overwrite left out)."""
    found = {}
    for override in settings(overrides):
        key, _, value = override.partition("=")
        if key.lstrip("+~") in keys:
            found[key.lstrip("+~")] = value
    return found
