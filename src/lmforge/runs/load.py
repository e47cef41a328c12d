"""`lmforge.load_run(run_dir)`: rebuild a run's data, model and weights from its saved config."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import yaml

from lmforge.errors import UserError
from lmforge.runs.checkpoints import find_checkpoint, read_checkpoint, run_dir_of


@dataclass
class LoadedRun:
    config: dict  # the run's resolved config, with any overrides applied
    datamodule: Any  # a LightningDataModule
    module: Any  # the LightningModule, weights loaded, in eval mode
    checkpoint: Path

    @property
    def model(self):
        return self.module.model

    @property
    def tokenizer(self):
        return getattr(self.datamodule, "tokenizer", None)


def saved_config(path: str | Path) -> dict:
    """The resolved config of a run directory or of a checkpoint (from the file or its run dir)."""
    run_dir = run_dir_of(path)
    if run_dir is not None:
        with open(run_dir / ".hydra" / "config.yaml", encoding="utf-8") as f:
            return yaml.safe_load(f)
    ckpt = read_checkpoint(find_checkpoint(path))
    config = (ckpt.get("lmforge") or {}).get("config")
    if not config:
        raise UserError(f"{path}: no lmforge config in this checkpoint and no run directory around it")
    return config


def merge(base: dict, override: Optional[dict]) -> dict:
    """Deep-merge `override` into a copy of `base` (dicts merge, anything else replaces)."""
    merged = dict(base)
    for key, value in (override or {}).items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict) and "_target_" not in value:
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_run(path: str | Path, overrides: Optional[dict] = None, checkpoint: Optional[str | Path] = None
             ) -> LoadedRun:
    """Rebuild a finished run: `path` is a run directory or a `.ckpt`; `overrides` patch its config
    (e.g. `{"data": {"test_file": "x.csv"}}`); weights come from `checkpoint` or the best one."""
    from lmforge.config.validate import check_node
    from lmforge.experiment import build_datamodule, build_module

    config = merge(saved_config(path), overrides)
    for section in (overrides or {}):
        if isinstance(config.get(section), dict) and "_target_" in config[section]:
            check_node(section, config[section])
    ckpt_path = find_checkpoint(checkpoint or path)
    ckpt = read_checkpoint(ckpt_path)
    datamodule = build_datamodule(config)
    module, config = build_module(config, datamodule)
    try:
        module.load_state_dict(ckpt["state_dict"])
    except RuntimeError as exc:
        raise UserError(f"{ckpt_path}: weights do not fit the model of its config "
                        f"({str(exc).splitlines()[0]})") from exc
    module.eval()
    return LoadedRun(config=config, datamodule=datamodule, module=module, checkpoint=ckpt_path)
