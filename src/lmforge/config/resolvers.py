"""OmegaConf resolvers used by the config tree (registered before Hydra composes)."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from omegaconf import OmegaConf


def sweep_group() -> str | None:
    """The group of this job's W&B run: the W&B sweep when an agent runs it, else the Hydra sweep
    directory's name in a multirun, else None (a single run)."""
    if os.environ.get("WANDB_SWEEP_ID"):
        return os.environ["WANDB_SWEEP_ID"]
    from lmforge.job import in_multirun

    if in_multirun():
        from hydra.core.hydra_config import HydraConfig

        return Path(HydraConfig.get().sweep.dir).name
    return None


def config_groups(_root_) -> str:
    """The `--help` list of the config groups this command composes (those in its defaults), each with
    its options: Hydra's own list would show every group of conf/, most of which only `train` uses."""
    from hydra.core.global_hydra import GlobalHydra

    loader = GlobalHydra.instance().config_loader()
    groups = sorted(group for group in _root_.hydra.runtime.choices
                    if not group.startswith("hydra") and group != "local")
    return "\n".join(f"{group}: {', '.join(sorted(loader.get_group_options(group)))}" for group in groups)


def register_resolvers() -> None:
    """`${lmforge.unique:}` (a short random id so that run dirs never collide), `${lmforge.cwd:}` (the
    launch directory: unlike `${hydra:runtime.cwd}` it resolves before Hydra's job starts, as a
    sweep directory must), `${lmforge.sweep_group:}` and `${lmforge.config_groups:}` (for --help)."""
    if not OmegaConf.has_resolver("lmforge.unique"):
        # use_cache: every read of hydra.run.dir within one composed config gives the same id.
        OmegaConf.register_new_resolver("lmforge.unique", lambda: secrets.token_hex(3), use_cache=True)
        OmegaConf.register_new_resolver("lmforge.cwd", os.getcwd)
        OmegaConf.register_new_resolver("lmforge.sweep_group", sweep_group)
        OmegaConf.register_new_resolver("lmforge.config_groups", config_groups)
