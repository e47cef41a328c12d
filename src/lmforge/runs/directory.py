"""The files of one run directory, read and written: plain IO, no building.

    .hydra/config.yaml   resolved config        run.json       how the run was made, its status
    metrics.json         final metrics          config_tree.txt
    checkpoints/         best, last, periodic   tokenizer/     language models' tokenizer
    csv/ tensorboard/ wandb/ (loggers)          predictions.csv (classifiers)
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import yaml

from lmforge.atomic import publish_dir, write_json, write_text
from lmforge.errors import UserError
from lmforge.runs.lock import LOCK_NAME
from lmforge.runs.redact import redact

# What a run writes, and so what `overwrite=true` may delete (nothing else in the directory).
RUN_FILES = (".hydra", "run.json", "metrics.json", "config_tree.txt", "checkpoints", "tokenizer", "csv",
             "tensorboard", "wandb", "predictions.csv", "profile.txt", "fit-profile.txt")


class RunDir:
    """One run directory: where its files are, and the few operations the commands need."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __str__(self) -> str:
        return str(self.path)

    config_file = property(lambda self: self.path / ".hydra" / "config.yaml")
    info_file = property(lambda self: self.path / "run.json")
    metrics_file = property(lambda self: self.path / "metrics.json")
    checkpoints = property(lambda self: self.path / "checkpoints")
    tokenizer_dir = property(lambda self: self.path / "tokenizer")

    def holds_run(self) -> bool:
        """Whether a run already wrote here (its record, metrics or checkpoints)."""
        return self.info_file.is_file() or self.metrics_file.is_file() or any(self.checkpoints.glob("*.ckpt"))

    def clear(self) -> None:
        """Delete the files a previous run wrote here (`overwrite=true`); other files are kept."""
        for name in RUN_FILES:
            target = self.path / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()

    def discard_if_unused(self, log_name: str) -> None:
        """Delete this directory if it holds nothing but the job log `log_name` and the run lock: what
        a launch stopped by bad input leaves before it writes any run file."""
        if self.path.is_dir() and {p.name for p in self.path.iterdir()} <= {log_name, LOCK_NAME}:
            shutil.rmtree(self.path)

    def read_info(self) -> dict[str, Any]:
        try:
            return json.loads(self.info_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}

    def write_info(self, info: dict[str, Any]) -> None:
        write_json(self.info_file, redact(info))

    def update_info(self, **changes: Any) -> None:
        """Merge `changes` into run.json (e.g. status, finished, global_step)."""
        self.write_info({**self.read_info(), **changes})

    def finish(self, status: str, **changes: Any) -> None:
        self.update_info(status=status, finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"), end_time=time.time(),
                         **changes)

    def write_config(self, config: dict[str, Any], tree: str | None = None) -> None:
        """The resolved config (Hydra's snapshot format) and, optionally, its rendered tree."""
        write_text(self.config_file, yaml.safe_dump(redact(config), sort_keys=False))
        if tree is not None:
            write_text(self.path / "config_tree.txt", redact(tree))

    def write_overrides(self, overrides: list[str]) -> None:
        write_text(self.path / ".hydra" / "overrides.yaml", yaml.safe_dump(redact(list(overrides))))

    def write_metrics(self, metrics: dict[str, float]) -> None:
        write_json(self.metrics_file, metrics)

    def read_metrics(self) -> dict[str, float]:
        try:
            return json.loads(self.metrics_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}

    def save_tokenizer(self, tokenizer: Any) -> None:
        """Keep the run's tokenizer beside its checkpoints: generate/export/fine-tune need nothing else."""
        with publish_dir(self.tokenizer_dir, replace=True) as tmp:
            tokenizer.save_pretrained(str(tmp))

    def refuse_unless(self, resume: bool, overwrite: bool, resumable: bool = True) -> None:
        """Never write over a run by accident (train, eval, tokenizer): it takes `overwrite=true`, or
        `resume=auto` for a training run to go on."""
        if resume or not self.holds_run():
            return
        if overwrite:
            self.clear()
            return
        info = self.read_info()
        facts = [f"lmforge {info['command']}" if "command" in info else "", info.get("status", "unknown status"),
                 f"step {info['global_step']}" if "global_step" in info else ""]
        status = f" ({', '.join(f for f in facts if f)})" if info else ""
        goes_on = "continue it with resume=auto, " if resumable else ""
        raise UserError(f"{self.path} already holds a run{status}: {goes_on}replace it with overwrite=true, "
                        "or choose another hydra.run.dir")
