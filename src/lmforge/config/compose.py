"""A command's config composed and validated from Python, as `lmforge <command> OVERRIDES` composes it,
without the CLI or a Hydra job: `lmforge.compose("train", ["experiment=mnist_mlp"])`."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from lmforge.errors import UserError


def compose(command: str = "train", overrides: Sequence[str] = ()) -> dict:
    """The validated, resolved config of `command` with `overrides` (Hydra's override syntax, taken as
    written: a free-text value with parentheses is quoted by the caller), as plain Python.

    `paths.output_dir` (and every path under it) is the run directory the CLI would pick, `hydra.run.dir`
    when given; `run_train(config, run_dir=...)` moves them into the directory it is given."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf, open_dict

    from lmforge.config import conf_dir
    from lmforge.config.errors import describe_error, is_user_error
    from lmforge.config.resolvers import register_resolvers
    from lmforge.config.schema import COMMANDS
    from lmforge.config.validate import validate

    if command not in COMMANDS:
        raise UserError(f"unknown command '{command}'; commands: {', '.join(COMMANDS)}")
    register_resolvers()
    overrides = list(overrides)
    try:
        # version_base 1.1: the same composition rules as the CLI, which leaves it unspecified.
        with initialize_config_dir(config_dir=str(conf_dir()), job_name=command, version_base="1.1"):
            cfg = hydra_compose(config_name=command, overrides=overrides, return_hydra_config=True)
        run_dir = str(OmegaConf.select(cfg, "hydra.run.dir") or "").strip()
    except Exception as exc:  # noqa: BLE001 - Hydra's composition errors: one line naming the override
        if is_user_error(exc):
            raise UserError(describe_error(exc, command, overrides)) from exc
        raise
    if not run_dir:
        raise UserError("hydra.run.dir is empty: give the run a directory (or leave the key out: a new one "
                        "under logs/)")
    with open_dict(cfg):
        if "paths" in cfg and "output_dir" in cfg.paths:  # ${hydra:runtime.output_dir}: set by a Hydra job
            cfg.paths.output_dir = str(Path(run_dir).absolute())
        del cfg["hydra"]
    return validate(cfg, command)


def relocate(config: dict, run_dir: str | Path) -> dict:
    """`config` with `paths.output_dir` and every path under it (checkpoints, logs) moved into `run_dir`."""
    old = str((config.get("paths") or {}).get("output_dir") or "")
    new = str(Path(run_dir).absolute())
    if not old or old == new:
        return config

    def moved(value: Any) -> Any:
        if isinstance(value, str) and (value == old or value.startswith(old.rstrip("/") + "/")):
            return new + value[len(old.rstrip("/")):]
        if isinstance(value, dict):
            return {k: moved(v) for k, v in value.items()}
        if isinstance(value, list):
            return [moved(v) for v in value]
        return value

    return moved(config)
