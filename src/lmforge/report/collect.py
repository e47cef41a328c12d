"""Find and read the runs and sweeps a report compares (run directories, sweep directories, globs)
and choose where the report goes.

A run directory holds `metrics.json` and/or `run.json` (plus `.hydra/` and `csv/metrics.csv`); a
sweep directory holds numbered job directories and `sweep.json` (or, from older lmforge or plain
Hydra, just `multirun.yaml`). Anything else given is searched for runs and sweeps below it.
"""

from __future__ import annotations

import glob
import json
import math
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from lmforge.errors import UserError
from lmforge.metric_direction import explicit_direction

# Top-level config sections that differ between runs without describing the experiment.
IGNORED_SECTIONS = {"paths", "hydra", "print_config"}
# Folders inside a run directory that never hold runs: not searched.
NOT_RUNS = {"checkpoints", "csv", "wandb", "tensorboard", "__pycache__"}
GLOB_CHARS = set("*?[")
# How the files of a report begin (html.render's <title>, table.to_csv's header): only such files are replaced.
REPORT_FILES = {"report.html": b"<title>lmforge report: ", "report.csv": b"run,status"}


@dataclass
class Run:
    """One run (or sweep job) as the report sees it."""

    label: str
    path: Optional[Path]  # None: a sweep job that never got a directory
    status: str  # finished | failed | running | pruned | preempted | unknown
    metrics: dict[str, float] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)  # flat config + config-group choices
    overrides: dict[str, str] = field(default_factory=dict)  # what the command line set

    def value(self, key: str) -> Any:
        """The run's setting for a config key or group (`optimizer.lr`, `model`), else its override."""
        return self.settings.get(key, self.overrides.get(key))


@dataclass
class Sweep:
    """A multirun: its jobs (failed and pruned ones included) and what it optimized."""

    path: Path
    runs: list[Run]
    params: list[str]
    optimized_metric: Optional[str] = None
    direction: Optional[str] = None  # "min" | "max"


@dataclass
class Collection:
    runs: list[Run]  # every run, sweep jobs included, in the order given
    sweeps: list[Sweep]


def collect(patterns: list[str]) -> Collection:
    """Everything under `patterns` (run dirs, sweep dirs, folders holding them, globs of those)."""
    runs: dict[Path, Run] = {}
    sweeps: list[Sweep] = []
    for path in _expand(patterns):
        for kind, found in _walk(path):
            if kind == "sweep":
                if any(s.path == found for s in sweeps):
                    continue
                sweep = read_sweep(found)
                sweeps.append(sweep)
                runs.update({(r.path or found / r.label): r for r in sweep.runs})
            elif found not in runs:
                runs[found] = read_run(found)
    if not runs:
        raise UserError(f"report: no runs (metrics.json or run.json) under {', '.join(patterns)}")
    _relabel(list(runs.values()), sweeps)
    return Collection(list(runs.values()), sweeps)


def output_dir(out: Optional[str], found: Collection, log_dir: Path) -> Path:
    """`out`, else the sweep's own directory when the report is of one sweep, else a new folder."""
    if out:
        return check_output(Path(out).expanduser())
    if len(found.sweeps) == 1 and len(found.sweeps[0].runs) == len(found.runs):
        return check_output(found.sweeps[0].path)
    return log_dir / "report" / f"{time.strftime('%Y-%m-%d_%H-%M-%S')}_{secrets.token_hex(3)}"


def check_output(folder: Path) -> Path:
    """`folder`, if a report may go there: a previous report is replaced (as `export` replaces a previous
    export); a report.html or report.csv that lmforge did not write, or a file as `folder`, is refused."""
    if folder.exists() and not folder.is_dir():
        raise UserError(f"report out={folder}: exists and is not a folder; choose a folder for the report")
    for name, start in REPORT_FILES.items():
        file = folder / name
        if file.exists() and start not in _head(file):
            raise UserError(f"report: {file} exists and is not an lmforge report; move it or choose another out=")
    return folder


def _head(file: Path) -> bytes:
    """The first bytes of `file` (none when it cannot be read: a folder, no permission)."""
    try:
        with open(file, "rb") as f:
            return f.read(4096)
    except OSError:
        return b""


def _expand(patterns: list[str]) -> list[Path]:
    paths = []
    for pattern in patterns:
        pattern = os.path.expanduser(pattern)
        if GLOB_CHARS & set(pattern):
            matches = sorted(glob.glob(pattern, recursive=True))
            if not matches:
                raise UserError(f"report: nothing matches {pattern}")
            paths += [Path(m).resolve() for m in matches if Path(m).is_dir()]
        elif not Path(pattern).is_dir():
            raise UserError(f"report: no such run or folder: {pattern}")
        else:
            paths.append(Path(pattern).resolve())
    return paths


def is_sweep(path: Path) -> bool:
    return (path / "sweep.json").is_file() or (path / "multirun.yaml").is_file()


def is_run(path: Path) -> bool:
    return (path / "metrics.json").is_file() or (path / "run.json").is_file()


def _walk(root: Path):
    """Yield ("sweep" | "run", path) for `root` itself or, if it is neither, the ones below it."""
    for folder, subdirs, _ in os.walk(root):
        path = Path(folder)
        if is_sweep(path) or is_run(path):
            subdirs.clear()
            yield ("sweep" if is_sweep(path) else "run"), path
        else:
            subdirs[:] = sorted(d for d in subdirs if not d.startswith(".") and d not in NOT_RUNS)


def read_run(path: Path, label: Optional[str] = None) -> Run:
    info = _read_json(path / "run.json") if (path / "run.json").is_file() else {}
    info = _expect(info, dict, path / "run.json", "a JSON object")
    metrics = _read_metrics(path / "metrics.json") if (path / "metrics.json").is_file() else {}
    return Run(label=label or path.name, path=path, status=str(info.get("status", "unknown")),
               metrics=metrics, settings=_settings(path), overrides=_overrides(path))


def read_sweep(path: Path) -> Sweep:
    """A sweep from its `sweep.json`, or from its job directories and `multirun.yaml`."""
    if (path / "sweep.json").is_file():
        return _sweep_from_json(path, _read_json(path / "sweep.json"))
    jobs = sorted((p for p in path.iterdir() if p.name.isdigit() and p.is_dir() and is_run(p)),
                  key=lambda p: int(p.name))
    runs = [read_run(job) for job in jobs]
    keys = dict.fromkeys(k for run in runs for k in run.overrides)
    params = [k for k in keys if len({str(run.overrides.get(k)) for run in runs}) > 1]
    metric = next((r.settings.get("optimized_metric") for r in runs if r.settings.get("optimized_metric")), None)
    sweeper = _dig(_read_yaml(path / "multirun.yaml"), ("hydra", "sweeper"), path / "multirun.yaml")
    return Sweep(path, runs, params, metric, explicit_direction(sweeper.get("direction")))


def _sweep_from_json(path: Path, summary: Any) -> Sweep:
    jobs = summary.get("jobs") if isinstance(summary, dict) else None
    if not isinstance(jobs, list) or not all(isinstance(job, dict) for job in jobs):
        raise UserError(f"{path / 'sweep.json'}: expected an object with a list of jobs")
    file = path / "sweep.json"
    runs = []
    for job in jobs:
        number = str(job.get("job", len(runs)))
        # The job's folder inside this sweep directory first: the sweep may have been moved or copied.
        run_dir = path / number if (path / number).is_dir() else None
        moved = _expect(job.get("run_dir"), str, file, f"'run_dir' of job {number} as a path")
        if run_dir is None and moved and Path(moved).is_dir():
            run_dir = Path(moved)
        run = read_run(run_dir, number) if run_dir else Run(label=number, path=None, status="unknown")
        run.status = str(job.get("status") or run.status)
        metrics = _expect(job.get("metrics"), dict, file, f"'metrics' of job {number} as an object of numbers")
        run.metrics = run.metrics or _numbers(metrics, file)
        overrides = _expect(job.get("overrides"), list, file, f"'overrides' of job {number} as a list")
        run.overrides = run.overrides or _parse_overrides(overrides)
        runs.append(run)
    params = _expect(summary.get("params"), list, file, "'params' as a list of config keys")
    return Sweep(path, runs, [str(p) for p in params], summary.get("optimized_metric"),
                 explicit_direction(summary.get("direction")))


def _settings(path: Path) -> dict[str, Any]:
    """The resolved config, flattened (`optimizer.lr`), plus the config-group choices (`model`)."""
    config = _expect(_read_yaml(path / ".hydra" / "config.yaml"), dict, path / ".hydra" / "config.yaml",
                     "a mapping of config keys")
    choices = _dig(_read_yaml(path / ".hydra" / "hydra.yaml"), ("hydra", "runtime", "choices"),
                   path / ".hydra" / "hydra.yaml")
    settings = {str(k): v for k, v in choices.items() if v is not None and not str(k).startswith("hydra")}
    for key, value in _flatten({k: v for k, v in config.items() if k not in IGNORED_SECTIONS}).items():
        if not (isinstance(value, str) and str(path) in value):  # per-run paths differ by design
            settings[key] = value
    return settings


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict) and node:
        out = {}
        for key, value in node.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: node}


def _overrides(path: Path) -> dict[str, str]:
    file = path / ".hydra" / "overrides.yaml"
    return _parse_overrides(_expect(_read_yaml(file), list, file, "a list of overrides"))


def _parse_overrides(overrides: list) -> dict[str, str]:
    """`["+model.x=1", "optimizer=sgd"]` -> {"model.x": "1", "optimizer": "sgd"}; hydra.* left out."""
    parsed = {}
    for override in overrides:
        key, _, value = str(override).partition("=")
        key = key.lstrip("+~")
        if key and not key.startswith("hydra.") and key.split(".")[0] not in IGNORED_SECTIONS:
            parsed[key] = value
    return parsed


def _relabel(runs: list[Run], sweeps: list[Sweep]) -> None:
    """Name each run by its path relative to what all runs share (`3`, `sweep_a/3`, `runs/x`)."""
    homes = {id(run): run.path or sweep.path / run.label for sweep in sweeps for run in sweep.runs}
    homes.update({id(run): run.path for run in runs if run.path})
    if len(sweeps) == 1 and len(runs) == len(sweeps[0].runs):
        common = sweeps[0].path  # one sweep: its jobs are 0, 1, 2...
    elif len(runs) == 1:
        common = homes[id(runs[0])].parent
    else:
        common = Path(os.path.commonpath([str(p) for p in homes.values()]))
    for run in runs:
        home = homes[id(run)]
        run.label = str(home.relative_to(common)) if home != common else home.name


def _read_metrics(file: Path) -> dict[str, float]:
    metrics = _read_json(file)
    if not isinstance(metrics, dict):
        raise UserError(f"{file}: expected a JSON object of metric names and numbers")
    return _numbers(metrics, file)


def _numbers(metrics: dict, file: Path) -> dict[str, float]:
    out = {}
    for name, value in metrics.items():
        if value is None:
            out[name] = math.nan
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[name] = float(value)
        else:
            raise UserError(f"{file}: metric '{name}' is not a number: {value!r}")
    return out


def _expect(value: Any, kind: type, file: Path, what: str) -> Any:
    """`value` when it is a `kind` (None: an empty one), else a one-line error: `file` should hold `what`."""
    if value is None:
        return kind()
    if not isinstance(value, kind):
        raise UserError(f"{file}: expected {what}, found {type(value).__name__} {str(value)[:40]!r}")
    return value


def _dig(node: Any, keys: tuple[str, ...], file: Path) -> dict:
    """`node[k1][k2]...` of a YAML file, {} where a key is missing; a non-mapping on the way is an error."""
    node = _expect(node, dict, file, "a mapping")
    for i, key in enumerate(keys):
        node = _expect(node.get(key), dict, file, f"'{'.'.join(keys[:i + 1])}' as a mapping")
    return node


def _read_json(file: Path) -> Any:
    try:
        return json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{file}: not valid JSON ({exc})") from exc


def _read_yaml(file: Path) -> Any:
    if not file.is_file():
        return None
    try:
        return yaml.safe_load(file.read_text())
    except yaml.YAMLError as exc:
        raise UserError(f"{file}: not valid YAML ({str(exc).splitlines()[0]})") from exc
