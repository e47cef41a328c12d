"""Confusion matrices of classification runs (`confusion_matrix.json`) as plotly heatmaps."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import plotly.graph_objects as go

from lmforge.errors import UserError
from lmforge.report.collect import Run
from lmforge.runs.directory import CONFUSION_MATRIX


@dataclass
class Confusion:
    labels: list[str]
    counts: list[list[int]]  # counts[true][predicted]


def read_confusion(run_dir: Optional[Path]) -> Optional[Confusion]:
    """The run's confusion matrix, or None when it wrote none. A malformed file is a one-line error."""
    file = run_dir / CONFUSION_MATRIX if run_dir else None
    if file is None or not file.is_file():
        return None
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{file}: not a readable JSON file ({exc})") from exc
    labels = data.get("labels") if isinstance(data, dict) else None
    counts = data.get("counts") if isinstance(data, dict) else None
    n = len(labels) if isinstance(labels, list) else 0
    if not (n and isinstance(counts, list) and len(counts) == n
            and all(isinstance(row, list) and len(row) == n for row in counts)
            and all(isinstance(c, int) and not isinstance(c, bool) for row in counts for c in row)):
        raise UserError(f"{file}: expected {{\"labels\": [names], \"counts\": [[integers]]}} with one row and "
                        f"one column per label")
    return Confusion([str(label) for label in labels], counts)


def confusion_figure(run: Run, confusion: Confusion, color: str) -> go.Figure:
    """A heatmap of counts (true class down, predicted across), each cell's count written in it and its
    share of the true class on hover; the title carries the run's colour of the table and curves."""
    labels = confusion.labels
    shares = [[c / max(sum(row), 1) for c in row] for row in confusion.counts]
    fig = go.Figure(go.Heatmap(
        z=confusion.counts, x=labels, y=labels, customdata=shares, colorscale="Blues",
        texttemplate="%{z}", hovertemplate="true %{y}<br>predicted %{x}<br>%{z} (%{customdata:.1%} of %{y})"
                                            "<extra></extra>", colorbar={"title": {"text": "count"}}))
    size = min(640, 260 + 28 * len(labels))
    fig.update_layout(
        template="plotly_white", height=size, margin={"l": 70, "r": 20, "t": 60, "b": 60},
        title={"text": f"<span style='color:{color}'>■</span> {run.label}: confusion matrix", "x": 0.01,
               "font": {"size": 15}},
        xaxis={"title": {"text": "predicted"}, "type": "category", "side": "bottom"},
        yaxis={"title": {"text": "true"}, "type": "category", "autorange": "reversed"})
    return fig


def confusion_figures(runs: list[Run], palette: dict[str, str]) -> list[go.Figure]:
    """One heatmap per run that wrote a confusion matrix, in table order."""
    figures = []
    for run in runs:
        confusion = read_confusion(run.path)
        if confusion is not None:
            figures.append(confusion_figure(run, confusion, palette[run.label]))
    return figures
