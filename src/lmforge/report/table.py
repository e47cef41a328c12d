"""The comparison table: the settings that differ, the final metrics, best run first.

Runs are ranked by one metric (`sort_by`, or what the sweep or the runs optimized) in its direction:
`sort_order`, else the sweep's direction, else the run's `monitor_mode`, else the metric's name
(lmforge.metric_direction, the rule the sweep summary and the Optuna sweeper follow too).
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from typing import Any, Optional

from lmforge.config.validate import did_you_mean
from lmforge.errors import UserError
from lmforge.metric_direction import direction as metric_direction
from lmforge.metrics import is_per_class
from lmforge.report.collect import Collection, Run
from lmforge.seed_groups import Comparison, compare, differing

# Jobs whose metrics (if any) are not final: listed after the ranked ones, never "best".
NOT_RANKED = {"failed", "pruned", "running", "preempted"}


@dataclass
class Table:
    runs: list[Run]  # in row order: ranked runs best first, then the rest as found
    keys: list[str]  # config keys and groups whose values differ (swept ones first)
    metrics: list[str]
    target: Optional[str]  # the metric that ranks the runs
    direction: Optional[str]  # "min" | "max"
    best: Optional[Run]

    @property
    def header(self) -> list[str]:
        return ["run", "status", *self.keys, *self.metrics]

    def cells(self, run: Run) -> list[Any]:
        return [run.label, run.status, *[run.value(k) for k in self.keys],
                *[run.metrics.get(m) for m in self.metrics]]


def build_table(found: Collection, metrics: Optional[list[str]] = None, keys: Optional[list[str]] = None,
                sort_by: Optional[str] = None, sort_order: Optional[str] = None) -> Table:
    known = sorted({name for run in found.runs for name in run.metrics})
    for name in [*(metrics or []), *([sort_by] if sort_by else [])]:
        if name not in known:
            key = "sort_by" if name == sort_by else "metrics"
            raise UserError(f"report {key}: no run has a metric '{name}'{did_you_mean(name, known)} "
                            f"(metrics: {', '.join(known) or 'none'})")
    for key in keys or []:
        if all(run.value(key) is None for run in found.runs):
            settings = {k for run in found.runs for k in [*run.settings, *run.overrides]}
            raise UserError(f"report keys: no run has a config key '{key}'{did_you_mean(key, settings)}")
    target = sort_by or default_target(found, known)
    direction = sort_order or (direction_of(target, found) if target else None)
    if sort_by and direction is None:
        raise UserError(f"report sort_by={sort_by}: cannot tell whether lower or higher is better; "
                        f"add sort_order=min or sort_order=max")
    # Scores of each class (test/recall/<class>...) only when asked for: a column each would bury the rest.
    columns = list(metrics) if metrics else ([target] if target else []) + [
        m for m in known if m != target and not is_per_class(m)]
    ranked = [r for r in found.runs if target and direction and _rankable(r, target)]
    ranked.sort(key=lambda r: r.metrics[target], reverse=direction == "max")
    rest = [r for r in found.runs if r not in ranked]
    return Table(ranked + rest, keys or differing_keys(found), columns, target, direction,
                 ranked[0] if ranked else None)


def default_target(found: Collection, known: list[str]) -> Optional[str]:
    """What the sweep optimized, else the runs' `optimized_metric`, else their `monitor`."""
    candidates = [s.optimized_metric for s in found.sweeps]
    candidates += [r.settings.get(key) for key in ("optimized_metric", "monitor") for r in found.runs]
    return next((c for c in candidates if c in known), None)


def direction_of(metric: str, found: Collection) -> Optional[str]:
    for sweep in found.sweeps:
        if sweep.optimized_metric == metric and sweep.direction:
            return sweep.direction
    for run in found.runs:
        if run.settings.get("monitor") == metric and run.settings.get("monitor_mode") in ("min", "max"):
            return run.settings["monitor_mode"]
    return metric_direction(metric)


def seed_comparison(table: Table, found: Collection, alpha: float) -> Optional[Comparison]:
    """The ranked runs in groups that differ only in `seed`, on the table's metric; None when no seed
    was repeated. Groups are told apart by every setting that differs, whichever `keys` the table shows."""
    if not table.target:
        return None
    runs = [run for run in table.runs if _rankable(run, table.target)]
    keys = differing_keys(found)
    settings = differing([{k: fmt(run.value(k)) for k in keys if run.value(k) is not None} for run in runs])
    return compare([(s, run.metrics[table.target], run) for s, run in zip(settings, runs)], table.target,
                   table.direction, alpha)


def differing_keys(found: Collection) -> list[str]:
    """Swept parameters, then the overridden keys (all config keys if none recorded) that differ."""
    params = list(dict.fromkeys(p for sweep in found.sweeps for p in sweep.params))
    runs = found.runs
    if any(run.overrides for run in runs):
        candidates = dict.fromkeys(k for run in runs for k in run.overrides)
    else:
        candidates = dict.fromkeys(k for run in runs for k in run.settings)
    # Runs that do not know a key (a job that never started has only its overrides) do not count.
    return params + [k for k in candidates if k not in params
                     and len({str(run.value(k)) for run in runs if run.value(k) is not None}) > 1]


def _rankable(run: Run, target: str) -> bool:
    value = run.metrics.get(target)
    return run.status not in NOT_RANKED and value is not None and math.isfinite(value)


def fmt(value: Any) -> str:
    """A cell as text: 4 significant digits for floats, nothing for a missing value."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def to_csv(table: Table) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(table.header)
    writer.writerows([["" if v is None else v for v in table.cells(run)] for run in table.runs])
    return buffer.getvalue()


def to_rich(table: Table):
    """The table for the terminal: best row in bold green, failed ones red, pruned ones dim."""
    from rich.table import Table as RichTable

    ranked_by = f", best {table.target} first ({table.direction})" if table.best else ""
    out = RichTable(*table.header, title=f"{len(table.runs)} runs{ranked_by}")
    styles = {"failed": "red", "pruned": "dim", "running": "yellow", "preempted": "yellow"}
    for run in table.runs:
        style = "bold green" if run is table.best else styles.get(run.status)
        out.add_row(*[fmt(v) for v in table.cells(run)], style=style)
    return out
