"""Plotly figures of a report: training curves overlaid per metric family, sweep parameters vs metric."""

from __future__ import annotations

import math
from typing import Any, Optional

import plotly.graph_objects as go
from plotly.colors import qualitative

from lmforge.report.collect import Run, Sweep
from lmforge.report.history import History
from lmforge.report.table import Table, fmt

FAMILY_ORDER = ("loss", "acc", "bpb", "ppl")
LR = "learning rate"
DASH = {"train": "solid", "val": "dash"}
BEST = "#f2b701"


def colors(runs: list[Run]) -> dict[str, str]:
    """One colour per run, the same in every chart and the table."""
    palette = qualitative.Plotly if len(runs) <= len(qualitative.Plotly) else qualitative.Alphabet
    return {run.label: palette[i % len(palette)] for i, run in enumerate(runs)}


def family(metric: str) -> Optional[str]:
    """The chart a logged metric goes to: 'loss' for train/loss and val/loss, ... None: not a curve."""
    if metric.startswith("test/"):
        return None  # logged once, at the end: in the table
    if metric.startswith("lr"):
        return LR  # Lightning's LearningRateMonitor: lr-AdamW, lr-AdamW/pg1
    if metric.startswith("harness/"):  # lm-eval tasks scored while training: one chart per task and metric
        return None if metric.endswith("_stderr") else metric.removeprefix("harness/")
    stage, *rest = metric.split("/")
    if stage == "val" and len(rest) == 2:
        return rest[0]  # val/loss/<source>: a mixture's source, on the chart of val/loss
    return metric.rsplit("/", 1)[-1].removesuffix("_step").removesuffix("_epoch")  # self.log(on_step, on_epoch)


def curve_figures(table: Table, histories: dict[str, History], palette: dict[str, str]) -> list[go.Figure]:
    """One figure per metric family, every run's train and val curves overlaid, by step or wall time."""
    families: dict[str, list[tuple[Run, str]]] = {}
    for run in table.runs:
        history = histories.get(run.label)
        for metric in history.series if history else ():
            if family(metric):
                families.setdefault(family(metric), []).append((run, metric))
    order = sorted(families, key=lambda f: (f == LR, FAMILY_ORDER.index(f) if f in FAMILY_ORDER else 9, f))
    return [_curves(name, families[name], histories, palette) for name in order]


def _curves(name: str, curves: list[tuple[Run, str]], histories: dict[str, History],
            palette: dict[str, str]) -> go.Figure:
    fig = go.Figure()
    by_step, by_time, shown = [], [], set()
    for run, metric in curves:
        history = histories[run.label]
        series = history.series[metric]
        stage, *rest = metric.split("/")
        source = rest[1] if len(rest) == 2 else None  # val/loss/<source>: dotted, named in the legend
        fig.add_trace(go.Scatter(
            x=series.steps, y=series.values, name=f"{run.label} · {source}" if source else run.label,
            legendgroup=run.label, showlegend=bool(source) or run.label not in shown,
            mode="lines" if len(series.steps) > 40 else "lines+markers",
            line={"color": palette[run.label], "dash": "dot" if source else DASH.get(stage, "dot"),
                  "width": 1 if source else 2},
            marker={"size": 5}, hovertemplate=f"{run.label}<br>{metric} %{{y:.4g}}<br>%{{x}}<extra></extra>"))
        shown.add(run.label)
        by_step.append(series.steps)
        by_time.append(history.seconds(series.steps))
    stages = sorted({m.split("/")[0] for _, m in curves} & set(DASH))
    legend = " · ".join(f"{'solid' if s == 'train' else 'dashed'}: {s}" for s in stages) if len(stages) > 1 else ""
    _layout(fig, name, legend, "step", name if name != LR else "lr")
    if name == LR:  # rates from 1e-5 to 1e-2 (and warm-ups from near 0): orders of magnitude
        fig.update_yaxes(type="log")
    if any(t is not None for t in by_time):
        _time_buttons(fig, by_step, by_time)
    return fig


def _time_buttons(fig: go.Figure, by_step: list, by_time: list) -> None:
    """Buttons that switch every curve between step and wall time on the x axis."""
    longest = max(max(t) for t in by_time if t)
    scale, unit = (3600, "h") if longest > 3 * 3600 else (60, "min") if longest > 300 else (1, "s")
    times = [[s / scale for s in t] if t is not None else [] for t in by_time]
    fig.update_layout(updatemenus=[{
        "type": "buttons", "direction": "right", "x": 1, "xanchor": "right", "y": 1.02, "yanchor": "bottom",
        "showactive": True, "pad": {"r": 0, "t": 0}, "font": {"size": 11},
        "buttons": [
            {"label": "step", "method": "update", "args": [{"x": by_step}, {"xaxis.title.text": "step"}]},
            {"label": "wall time", "method": "update",
             "args": [{"x": times}, {"xaxis.title.text": f"wall time ({unit})"}]},
        ]}])


def sweep_figures(sweep: Sweep, table: Table, palette: dict[str, str]) -> list[go.Figure]:
    """The metric by job (with the best so far), then each swept parameter against the metric."""
    if table.target is None:
        return []
    plotted = [r for r in sweep.runs if _finite(r.metrics.get(table.target))]
    if not plotted:
        return []
    figures = [_progress(sweep, plotted, table, palette)] if len(sweep.runs) > 1 else []
    return figures + [_param(param, plotted, table, palette) for param in sweep.params]


def _progress(sweep: Sweep, plotted: list[Run], table: Table, palette: dict[str, str]) -> go.Figure:
    fig = go.Figure()
    jobs = [(i, r) for i, r in enumerate(sweep.runs) if r in plotted]
    ranked = [(i, r) for i, r in jobs if r.status not in ("failed", "pruned")]
    better = max if table.direction == "max" else min
    best_so_far, best = [], None
    for _, run in ranked:
        value = run.metrics[table.target]
        best = value if best is None else better(best, value)
        best_so_far.append(best)
    if table.direction:
        fig.add_trace(go.Scatter(x=[i for i, _ in ranked], y=best_so_far, mode="lines", name="best so far",
                                 line={"color": "#888", "shape": "hv"}))
    _points(fig, [r for _, r in jobs], [i for i, _ in jobs], table, palette)
    _layout(fig, f"{table.target} by job", "", "job", _metric_title(table))
    if len(sweep.runs) <= 30:
        fig.update_xaxes(dtick=1)
    return fig


def _param(param: str, plotted: list[Run], table: Table, palette: dict[str, str]) -> go.Figure:
    fig = go.Figure()
    xs = [_plain(run.value(param)) for run in plotted]
    numeric = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in xs)
    if not numeric:
        xs = [fmt(x) for x in xs]
    _points(fig, plotted, xs, table, palette)
    _layout(fig, param, "", param, _metric_title(table))
    if numeric and min(xs) > 0 and max(xs) / min(xs) >= 10 and not all(float(x).is_integer() for x in xs):
        fig.update_xaxes(type="log")  # learning rates, weight decays: not sizes and counts
    if numeric and len(set(xs)) <= 10:  # a grid: its values are the ticks
        fig.update_xaxes(tickvals=sorted(set(xs)), ticktext=[fmt(x) for x in sorted(set(xs))])
    elif not numeric:
        fig.update_xaxes(type="category", categoryorder="array", categoryarray=sorted(set(xs), key=_natural))
    return fig


def _points(fig: go.Figure, runs: list[Run], xs: list, table: Table, palette: dict[str, str]) -> None:
    """Finished jobs as coloured dots, pruned/failed ones as grey crosses, the best as a star."""
    groups = {"finished": [], "not finished": []}
    for run, x in zip(runs, xs):
        groups["finished" if run.status not in ("failed", "pruned") else "not finished"].append((run, x))
    for group, points in groups.items():
        if not points:
            continue
        done = group == "finished"
        fig.add_trace(go.Scatter(
            x=[x for _, x in points], y=[r.metrics[table.target] for r, _ in points], mode="markers",
            name="jobs" if done else "pruned / failed", text=[f"{r.label} ({r.status})" for r, _ in points],
            marker={"size": 10, "symbol": "circle" if done else "x", "line": {"width": 1, "color": "white"},
                    "color": [palette[r.label] for r, _ in points] if done else "#999"},
            hovertemplate="%{text}<br>%{x}<br>" + f"{table.target} " + "%{y:.4g}<extra></extra>"))
    best = [(r, x) for r, x in zip(runs, xs) if r is table.best]
    if best:
        fig.add_trace(go.Scatter(x=[best[0][1]], y=[best[0][0].metrics[table.target]], mode="markers",
                                 name="best", hoverinfo="skip",
                                 marker={"size": 18, "symbol": "star", "color": BEST,
                                         "line": {"width": 1, "color": "#333"}}))


def _layout(fig: go.Figure, title: str, subtitle: str, x_title: str, y_title: str) -> None:
    fig.update_layout(
        template="plotly_white", height=380, margin={"l": 60, "r": 20, "t": 60, "b": 40},
        title={"text": title, "subtitle": {"text": subtitle}, "x": 0.01, "font": {"size": 15}},
        legend={"orientation": "h", "y": -0.18, "font": {"size": 11}}, hovermode="closest",
        xaxis_title=x_title, yaxis_title=y_title)
    fig.update_xaxes(autorange=True)
    fig.update_yaxes(autorange=True)  # each chart's axes fit its own data


def _metric_title(table: Table) -> str:
    better = {"min": " (lower is better)", "max": " (higher is better)"}.get(table.direction or "", "")
    return f"{table.target}{better}"


def _plain(value: Any) -> Any:
    """Numbers stay numbers (also when they came from an override string), the rest as given."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _natural(text: str) -> tuple:
    try:
        return (0, float(text), text)
    except ValueError:
        return (1, 0.0, text)


def _finite(value: Optional[float]) -> bool:
    return value is not None and math.isfinite(value)
