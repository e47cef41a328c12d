"""Lightning's CSVLogger, keeping the metric history of a resumed run instead of deleting it."""

from __future__ import annotations

import csv
import io
import os
from typing import Optional

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.utilities import rank_zero_only

from lmforge.atomic import write_text
from lmforge.compat import lightning as lightning_compat


class _HistoryWriter(ExperimentWriter):
    """Lightning's writer deletes an existing metrics.csv when it starts; this one keeps the rows of
    the steps up to the checkpoint's and appends; `finalize` leaves every (step, metric set) once.

    Lightning logs the rows of optimizer step N (its training row, the validation after it, the end of
    its epoch) at step N - 1: the steps it counts are those done before. A checkpoint of global step
    `resume_step` holds the steps logged at 0 .. resume_step - 1; the rows a killed attempt logged at
    `resume_step` and later are of steps the resumed run does again, and logs again."""

    def __init__(self, log_dir: str, resume_step: Optional[int]) -> None:
        self.resume_step = resume_step
        super().__init__(log_dir)

    def _check_log_dir_exists(self) -> None:
        if not os.path.isfile(self.metrics_file_path):
            return
        header, rows = _read(self.metrics_file_path)
        if self.resume_step is not None:  # rows of the steps redone are logged again by this run
            rows = [r for r in rows if _step(r) < self.resume_step]
        else:
            rows = []  # a new run in a cleared directory: no history to keep
        _write(self.metrics_file_path, header, rows)
        self.metrics_keys = list(header)


def _step(row: dict) -> int:
    try:
        return int(float(row.get("step") or -1))
    except ValueError:
        return -1


def _read(path: str) -> tuple[list[str], list[dict]]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def _write(path: str, header: list[str], rows: list[dict]) -> None:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=header)
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, out.getvalue())


def dedupe(path: str) -> None:
    """Keep the last row of each (step, logged metrics) and order rows by step: after resumes, every
    step appears exactly once even when a killed attempt logged past its last checkpoint."""
    header, rows = _read(path)
    last: dict[tuple, dict] = {}
    for row in rows:
        last[(_step(row), tuple(sorted(k for k, v in row.items() if v not in ("", None) and k != "step")))] = row
    _write(path, header, sorted(last.values(), key=_step))


class HistoryCSVLogger(CSVLogger):
    """`CSVLogger(save_dir, name, version)` whose metrics.csv survives `resume=auto`: the runner
    passes `resume_step` (the global step of the checkpoint it resumes from)."""

    def __init__(self, save_dir: str, name: str = "csv", version: str = "", resume_step: Optional[int] = None,
                 flush_logs_every_n_steps: int = 100) -> None:
        super().__init__(save_dir, name=name, version=version, flush_logs_every_n_steps=flush_logs_every_n_steps)
        self.resume_step = resume_step

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        return lightning_compat.logger_experiment(self, lambda: _HistoryWriter(self.log_dir, self.resume_step))

    @rank_zero_only
    def finalize(self, status: str) -> None:
        super().finalize(status)
        if os.path.isfile(self.experiment.metrics_file_path):
            dedupe(self.experiment.metrics_file_path)
