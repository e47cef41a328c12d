"""`lmforge report`: find runs (metrics.json) under folders, tabulate what differs and what they reached."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any, Optional

import yaml

from lmforge.errors import UserError

# Config entries that differ between runs without describing the experiment.
IGNORED = {"paths", "hydra", "callbacks", "logger", "default_root_dir", "print_config", "cache_dir"}


def find_runs(roots: list[str]) -> list[Path]:
    runs = []
    for root in roots:
        path = Path(root).expanduser()
        if not path.exists():
            raise UserError(f"report: no such run or folder: {root}")
        runs += [p.parent for p in sorted(path.rglob("metrics.json"))] if path.is_dir() else []
    if not runs:
        raise UserError(f"report: no runs (metrics.json) under {', '.join(roots)}")
    return runs


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key in IGNORED:
                continue
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: node}


def read_run(run: Path) -> tuple[dict[str, Any], dict[str, float]]:
    config_file = run / ".hydra" / "config.yaml"
    config = yaml.safe_load(config_file.read_text()) if config_file.is_file() else {}
    try:
        metrics = json.loads((run / "metrics.json").read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"{run / 'metrics.json'}: not valid JSON ({exc})") from exc
    return flatten(config or {}), metrics


def compare(roots: list[str], metrics: Optional[list[str]] = None, sort_by: Optional[str] = None,
            keys: Optional[list[str]] = None) -> tuple[list[str], list[list[Any]]]:
    """Header and rows: run, the config keys whose values differ between runs (or `keys`), metrics."""
    runs = find_runs(roots)
    read = [read_run(run) for run in runs]
    if keys is None:
        all_keys = sorted({k for config, _ in read for k in config})
        keys = [k for k in all_keys if len({json.dumps(c.get(k), default=str) for c, _ in read}) > 1]
    names = metrics or sorted({m for _, found in read for m in found})
    common = runs[0].parent if len(runs) == 1 else Path(os.path.commonpath([str(r) for r in runs]))
    rows = []
    for run, (config, found) in zip(runs, read):
        rows.append([str(run.relative_to(common)) or run.name, *[config.get(k) for k in keys],
                     *[found.get(m) for m in names]])
    header = ["run", *keys, *names]
    if sort_by:
        if sort_by not in header:
            raise UserError(f"report.sort_by={sort_by}: not a column; columns: {', '.join(header)}")
        i = header.index(sort_by)
        rows.sort(key=lambda r: (r[i] is None, r[i] if isinstance(r[i], (int, float)) else str(r[i])))
    return header, rows


def to_csv(header: list[str], rows: list[list[Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def to_markdown(header: list[str], rows: list[list[Any]]) -> str:
    def cell(value: Any) -> str:
        return f"{value:.4g}" if isinstance(value, float) else ("" if value is None else str(value))
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"
