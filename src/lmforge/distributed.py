"""Which process owns the run directory, how the processes of a distributed run leave together, and
what a sharded (FSDP) model changes for code that reads its parameters."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any


def is_main_process() -> bool:
    """Global rank 0, before the Trainer knows: the launcher's rank variables (RANK, SLURM_PROCID...,
    read by Lightning) and the node rank of a multi-node job started by hand (NODE_RANK)."""
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    return rank_zero_only.rank == 0 and int(os.environ.get("NODE_RANK", 0)) == 0


def leave_together() -> None:
    """Under DDP, wait for every rank, then close the process group: a rank that exits while another
    still talks to it can make the other abort at exit ("terminate called without an active exception")."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def job_command(local_rank: int) -> tuple[list[str], str]:
    """The command line that starts rank `local_rank` of this Hydra job: `python -m lmforge <command>`
    with the job's own overrides and run directory (and the user's --config-dir)."""
    import sys

    from hydra.core.hydra_config import HydraConfig

    hydra = HydraConfig.get()
    command = [sys.executable, "-m", "lmforge", hydra.job.config_name]
    for source in hydra.runtime.config_sources:
        if source.provider == "command-line":
            command += ["--config-dir", source.path.removeprefix("file://")]
    command += [o for o in hydra.overrides.hydra if o.startswith("hydra.searchpath")]
    command += list(hydra.overrides.task)
    command += [f"hydra.run.dir={hydra.runtime.output_dir}", f"hydra.job.name={hydra.job.name}_rank_{local_rank}"]
    return command, hydra.runtime.cwd



# Set by Lightning's launcher in the process of rank 0. Left over after a job, they tell the next job
# of a sweep run in the same process that its ranks were started externally, so it waits for ranks
# that never come.
RANK_VARIABLES = ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "RANK")


@contextlib.contextmanager
def job_environment() -> Iterator[None]:
    """Restore the rank variables of the environment after a job (for the next job of a sweep)."""
    saved = {name: os.environ.get(name) for name in RANK_VARIABLES}
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def shards_parameters(strategy: Any) -> bool:
    """Whether a `trainer.strategy` config (a registered name or a `_target_` dict) shards parameters (FSDP)."""
    from hydra.utils import get_object
    from lightning.pytorch.strategies import FSDPStrategy, StrategyRegistry

    if isinstance(strategy, dict):
        cls = get_object(strategy["_target_"]) if "_target_" in strategy else None
    else:
        cls = StrategyRegistry.get(strategy, {}).get("strategy") if isinstance(strategy, str) else None
    return isinstance(cls, type) and issubclass(cls, FSDPStrategy)


def whole_parameters(model: Any) -> contextlib.AbstractContextManager:
    """A context in which an FSDP model's modules hold their whole parameters on every rank (a collective
    call): outside its own forward, FSDP leaves each rank only its shard, so calling the wrapped model's
    modules directly fails ("'weight' must be 2-D"). A no-op for any other model."""
    from torch.distributed.fsdp import FullyShardedDataParallel

    if isinstance(model, FullyShardedDataParallel):
        return FullyShardedDataParallel.summon_full_params(model, writeback=False)
    return contextlib.nullcontext()
