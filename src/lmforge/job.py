"""What a command knows about the Hydra job it runs in: multirun or not, its number, one-line output."""

from __future__ import annotations

from pathlib import Path


def in_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def job_line(message: str) -> None:
    """Print one line about this job (prefixed with its number in a multirun)."""
    prefix = ""
    if in_multirun():
        from hydra.core.hydra_config import HydraConfig

        prefix = f"[job {HydraConfig.get().job.num}] "
    print(f"{prefix}{message}", flush=True)


def output_dir() -> Path:
    """The job's run directory (hydra.run.dir, or the job's directory in a sweep). An empty
    hydra.run.dir would be the working directory itself: refused."""
    from hydra.core.hydra_config import HydraConfig

    from lmforge.errors import UserError

    hydra = HydraConfig.get()
    if not in_multirun() and not str(hydra.run.dir).strip():
        raise UserError("hydra.run.dir is empty: give the run a directory (or leave the key out: a new one "
                        "under logs/)")
    return Path(hydra.runtime.output_dir)


def run_dir_is_fixed() -> bool:
    """Whether the run directory is chosen, not generated anew for each launch (a timestamped default):
    `resume=auto` only makes sense in a directory the next launch will find again."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    if in_multirun():  # a job's directory is <sweep dir>/<job>: the same when the job is requeued
        return True
    raw = OmegaConf.to_container(HydraConfig.instance().cfg.hydra.run, resolve=False)["dir"]
    return "${now:" not in raw and "lmforge.unique" not in raw
