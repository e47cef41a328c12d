"""A run's logged history (Lightning's `csv/metrics.csv`) as one series per metric."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from lmforge.errors import UserError

ELAPSED = "train/elapsed"  # seconds of wall time since fitting began, on the rows that log train/loss


@dataclass
class Series:
    steps: list[float]
    values: list[float]


@dataclass
class History:
    series: dict[str, Series]  # metric name -> its points, in logged order
    elapsed: Optional[Series]  # step -> wall seconds, when the run logged it

    def seconds(self, steps: list[float]) -> Optional[list[float]]:
        """Wall time at each of `steps`, interpolated between the logged ones (None: not logged)."""
        if self.elapsed is None or not self.elapsed.steps:
            return None
        order = np.argsort(self.elapsed.steps, kind="stable")
        xs, ys = np.asarray(self.elapsed.steps)[order], np.asarray(self.elapsed.values)[order]
        return np.interp(steps, xs, ys).tolist()


def read_history(run_dir: Optional[Path]) -> Optional[History]:
    """The run's curves, or None when it logged no CSV. A malformed file is a one-line error."""
    file = run_dir / "csv" / "metrics.csv" if run_dir else None
    if file is None or not file.is_file():
        return None
    try:
        return _read(file)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise UserError(f"{file}: not a readable CSV file ({exc})") from exc


def _read(file: Path) -> History:
    with open(file, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None:
            return History({}, None)
        if "step" not in reader.fieldnames:
            raise UserError(f"{file}: no 'step' column (not a Lightning CSVLogger metrics.csv?)")
        columns = {name: Series([], []) for name in reader.fieldnames if name not in ("step", "epoch")}
        for row in reader:
            line = reader.line_num
            if None in row:
                raise UserError(f"{file}:{line}: more values than columns")
            step = _number(row.get("step"), file, line, "step")
            for name, series in columns.items():
                value = _number(row.get(name), file, line, name)
                if value is not None and step is not None:
                    series.steps.append(step)
                    series.values.append(value)
    elapsed = columns.pop(ELAPSED, None)
    return History({k: v for k, v in columns.items() if v.steps}, elapsed if elapsed and elapsed.steps else None)


def _number(text: Optional[str], file: Path, line: int, column: str) -> Optional[float]:
    if text is None or text.strip() == "":
        return None
    try:
        value = float(text)
    except ValueError:
        raise UserError(f"{file}:{line}: column '{column}' is not a number: {text!r}") from None
    return value
