"""The files of one run directory, read and written: plain IO, no building.

    .hydra/config.yaml   resolved config        run.json       how the run was made, its status
    metrics.json         final metrics          config_tree.txt
    checkpoints/         best, last, periodic   tokenizer/     language models' tokenizer
    processor/           image (or audio) models' processor, exported beside the model
    csv/ tensorboard/ wandb/ (loggers)          predictions.csv, confusion_matrix.json (classifiers)
    test_generations.jsonl (SFT: test prompts, references and greedy generations)
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, Iterable, Optional

import yaml

from lmforge.atomic import publish_dir, write_json, write_text
from lmforge.errors import UserError
from lmforge.runs.checkpoints import run_dir_of
from lmforge.runs.lock import LOCK_NAME
from lmforge.runs.redact import redact

CONFUSION_MATRIX = "confusion_matrix.json"  # {"labels": [...], "counts": [[true x predicted]]}
TEST_GENERATIONS = "test_generations.jsonl"
# What a run writes, and so what `overwrite=true` may delete (nothing else in the directory).
RUN_FILES = (".hydra", "run.json", "metrics.json", "config_tree.txt", "checkpoints", "tokenizer", "processor", "csv",
             "tensorboard", "wandb", "predictions.csv", CONFUSION_MATRIX, TEST_GENERATIONS, "profile.txt",
             "fit-profile.txt")
# Overrides that say how a launch treats the directory, not what the run is.
CONTROL_KEYS = ("resume", "overwrite")


def settings(overrides: Iterable[str]) -> list[str]:
    """`overrides` less those of CONTROL_KEYS: what makes two launches the same run."""
    return [o for o in overrides if o.split("=", 1)[0].lstrip("+~") not in CONTROL_KEYS]


def inside(root: str | Path, path: str | Path) -> Path:
    """`path` resolved; refused (one line naming it) when a link takes it out of the run directory `root`:
    a run reads and writes its own files, never a folder of the user's that a link leads to."""
    base, target = Path(root).resolve(), Path(path).resolve()
    if target != base and base not in target.parents:
        raise UserError(f"{path} is a link out of the run directory (to {target}): lmforge reads and writes a "
                        "run's files only inside it; replace the link with the files, or choose another directory")
    return target


def refuse_overlap(key: str, output: str | Path, source: str | Path) -> None:
    """A command's output (`key`=`output`) must be apart from the run or file it reads (`source`): the
    same, holding it or inside it, replacing the output would delete what it is about to read."""
    out, src = Path(output).resolve(), Path(source).resolve()
    where = ("is" if out == src else "holds" if out in src.parents else "is inside" if src in out.parents
             else None)
    if where:
        raise UserError(f"{key}={output} {where} {source}, which this command reads: write the output to "
                        "a directory apart from it")


def read_paths(ckpt_path: str | Path) -> list[Path]:
    """What a command given `ckpt_path` reads: the path and the run directory around it, whose files
    are checked to be its own (no link out of it)."""
    given = Path(ckpt_path).expanduser()
    if not given.exists():
        return []  # the loader says so, in its own words
    run_dir = run_dir_of(given)
    if run_dir is None:
        return [given]
    RunDir(run_dir).check_links()
    return [given, run_dir]


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
    processor_dir = property(lambda self: self.path / "processor")

    def check_links(self) -> None:
        """Refuse a run file or folder (or anything in one) that is a link leading out of the directory."""
        for name in (*RUN_FILES, LOCK_NAME):
            top = self.path / name
            if not os.path.lexists(top):
                continue
            inside(self.path, top)
            if top.is_symlink() or not top.is_dir():
                continue
            for folder, dirs, files in os.walk(top):  # links are not followed, each is checked
                for entry in (*dirs, *files):
                    if os.path.islink(os.path.join(folder, entry)):
                        inside(self.path, os.path.join(folder, entry))

    def holds_run(self) -> bool:
        """Whether a run already wrote here (its record, metrics or checkpoints)."""
        return self.info_file.is_file() or self.metrics_file.is_file() or any(self.checkpoints.glob("*.ckpt"))

    def clear(self) -> None:
        """Delete the files a previous run wrote here (`overwrite=true`); other files are kept."""
        for name in RUN_FILES:
            target = self.path / name
            if target.is_symlink():  # the link goes, never what it leads to
                target.unlink()
            elif target.is_dir():
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

    def save_processor(self, processor: Any) -> None:
        """Keep the run's processor (an image processor, a feature extractor) beside its checkpoints."""
        with publish_dir(self.processor_dir, replace=True) as tmp:
            processor.save_pretrained(str(tmp))

    def finished_as(self, overrides: Iterable[str]) -> Optional[dict[str, float]]:
        """The metrics of a run here that finished as launched now (its saved overrides the same, less
        resume/overwrite): `resume=auto` has nothing left to do. None when there is something to do."""
        if self.read_info().get("status") != "finished":
            return None
        try:
            saved = yaml.safe_load((self.path / ".hydra" / "overrides.yaml").read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError):
            return None
        same = isinstance(saved, list) and settings(map(str, saved)) == settings(redact(list(overrides)))
        return (self.read_metrics() or None) if same else None

    def refuse_unless(self, resume: bool, overwrite: bool, resumable: bool = True,
                      reads: Iterable[Path] = ()) -> None:
        """Never write over a run by accident (train, eval, tokenizer): it takes `overwrite=true`, or
        `resume=auto` for a training run to go on. Links out of the directory are refused first, and an
        output not apart from what the command `reads` (a run, a file), which `overwrite=true` would delete."""
        self.check_links()
        holds = self.holds_run() and not resume
        if holds and not overwrite:
            self._refuse(resumable)
        for source in reads:
            refuse_overlap("hydra.run.dir", self.path, source)
        if holds:
            self.clear()

    def _refuse(self, resumable: bool) -> None:
        """The one line for a directory that holds a run: whose, and the ways on."""
        info = self.read_info()
        facts = [f"lmforge {info['command']}" if "command" in info else "", info.get("status", "unknown status"),
                 f"step {info['global_step']}" if "global_step" in info else ""]
        status = f" ({', '.join(f for f in facts if f)})" if info else ""
        goes_on = "continue it with resume=auto, " if resumable else ""
        raise UserError(f"{self.path} already holds a run{status}: {goes_on}replace it with overwrite=true, "
                        "or choose another hydra.run.dir")
