"""report.html: one self-contained page (plotly.js inlined once) with the table and the charts."""

from __future__ import annotations

import datetime
import math
from html import escape
from typing import Optional

import plotly.graph_objects as go

from lmforge.report.collect import Collection, Run
from lmforge.report.table import Table, fmt
from lmforge.seed_groups import Comparison

PLOT_CONFIG = {"responsive": True, "displaylogo": False, "toImageButtonOptions": {"scale": 2}}
STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1d2430;
       margin: 0; background: #f5f6f8; }
header, section { max-width: 1400px; margin: 0 auto; padding: 0 24px; }
header { padding-top: 20px; }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 17px; margin: 28px 0 10px; }
.sub { color: #5b6472; margin: 0; }
.best { background: #fff; border-left: 4px solid #2a9d5c; padding: 10px 14px; margin: 16px 0 0;
        border-radius: 4px; box-shadow: 0 1px 2px #0001; }
.scroll { overflow-x: auto; background: #fff; border-radius: 6px; box-shadow: 0 1px 2px #0001; }
table { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }
th, td { padding: 6px 10px; border-bottom: 1px solid #e6e8ec; text-align: left; white-space: nowrap; }
th { background: #fafbfc; position: sticky; top: 0; font-weight: 600; }
th.target { color: #2a9d5c; }
td.num { text-align: right; }
tr.best td { background: #e9f7ef; font-weight: 600; }
tr.failed td, tr.pruned td { color: #8a919c; }
.dot { display: inline-block; width: 10px; height: 10px; border-radius: 50%; margin-right: 6px; }
.status { padding: 1px 7px; border-radius: 9px; font-size: 12px; background: #eef0f3; }
.status.finished { background: #e3f4ea; color: #1e7a45; }
.status.failed { background: #fde8e8; color: #b42318; }
.status.pruned { background: #eef0f3; color: #5b6472; }
.status.running, .status.preempted { background: #fff4dc; color: #8a5a00; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(560px, 1fr)); gap: 14px; }
.chart { background: #fff; border-radius: 6px; box-shadow: 0 1px 2px #0001; padding: 6px; min-width: 0; }
.note { color: #5b6472; margin: 6px 0 0; }
footer { max-width: 1400px; margin: 30px auto; padding: 0 24px; color: #8a919c; font-size: 12px; }
"""


def render(found: Collection, table: Table, palette: dict[str, str], curves: list[go.Figure],
           sweep_charts: list[list[go.Figure]], confusions: list[go.Figure] = (),
           comparison: Optional[Comparison] = None) -> str:
    """The whole page. `sweep_charts[i]` are the charts of `found.sweeps[i]`; `confusions` the
    classification runs' confusion matrices; `comparison` the seed groups."""
    figures = _Figures()
    parts = [_header(found), _best(table)]
    if comparison:
        parts += [f"<section><p class=best>{escape(comparison.verdict())}</p>",
                  f"<h2>Seed groups</h2>{_groups(comparison)}</section>"]
    parts += ["<section><h2>Runs</h2>", _table(table, palette), "</section>"]
    for sweep, charts in zip(found.sweeps, sweep_charts):
        missing = [r for r in sweep.runs if table.target and not _has(r, table.target)]
        note = (f"<p class=note>{len(missing)} of {len(sweep.runs)} jobs without {escape(table.target)}"
                f" (not plotted): {escape(', '.join(f'{r.label} ({r.status})' for r in missing))}</p>"
                if missing else "")
        parts += [f"<section><h2>Sweep <code>{escape(str(sweep.path))}</code></h2>", note,
                  _grid(charts, figures), "</section>"]
    if curves:
        parts += ["<section><h2>Curves</h2>", _grid(curves, figures), "</section>"]
    if confusions:
        parts += ["<section><h2>Confusion matrices (test)</h2>", _grid(list(confusions), figures), "</section>"]
    generated = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    parts.append(f"<footer>lmforge report · {generated} · hover a curve for values, "
                 f"click a legend entry to hide a run, double-click to show only it</footer>")
    return (f"<!doctype html>\n<html lang=en><head><meta charset=utf-8>"
            f"<meta name=viewport content='width=device-width, initial-scale=1'>"
            f"<title>lmforge report: {len(table.runs)} runs</title><style>{STYLE}</style></head>\n"
            f"<body>\n" + "\n".join(parts) + "\n</body></html>\n")


def _header(found: Collection) -> str:
    counts: dict[str, int] = {}
    for run in found.runs:
        counts[run.status] = counts.get(run.status, 0) + 1
    status = ", ".join(f"{n} {s}" for s, n in counts.items())
    where = (f" in sweep <code>{escape(str(found.sweeps[0].path))}</code>" if len(found.sweeps) == 1
             and len(found.runs) == len(found.sweeps[0].runs) else "")
    return (f"<header><h1>lmforge report</h1><p class=sub>{len(found.runs)} runs{where} · "
            f"{escape(status)}</p></header>")


def _best(table: Table) -> str:
    if table.best is None:
        return ""
    run = table.best
    settings = ", ".join(f"{k}={fmt(run.value(k))}" for k in table.keys)
    return (f"<section><p class=best>Best: <b>{escape(run.label)}</b> with {escape(table.target)} = "
            f"<b>{fmt(run.metrics[table.target])}</b> ({'lowest' if table.direction == 'min' else 'highest'})"
            f"{' · ' + escape(settings) if settings else ''}</p></section>")


def _table(table: Table, palette: dict[str, str]) -> str:
    arrow = {"min": " ↓", "max": " ↑"}.get(table.direction or "", "")
    head = "".join(f"<th class=target>{escape(h)}{arrow}</th>" if h == table.target else f"<th>{escape(h)}</th>"
                   for h in table.header)
    rows = []
    for run in table.runs:
        label, status, *rest = table.cells(run)
        cells = [f"<td><span class=dot style='background:{palette[run.label]}'></span>{escape(label)}</td>",
                 f"<td><span class='status {escape(status)}'>{escape(status)}</span></td>"]
        cells += [f"<td class=num>{escape(fmt(v))}</td>" if isinstance(v, (int, float)) and not isinstance(v, bool)
                  else f"<td>{escape(fmt(v))}</td>" for v in rest]
        kind = "best" if run is table.best else escape(status)
        rows.append(f"<tr class={kind}>{''.join(cells)}</tr>")
    return (f"<div class=scroll><table id=runs><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table></div>")


def _groups(comparison: Comparison) -> str:
    """Runs that differ only in seed, one row per group: mean, 95 % confidence interval, n."""
    head = "".join(f"<th>{h}</th>" for h in ("group", "n", f"mean {escape(comparison.metric)}", "95% CI"))
    rows = []
    for group in comparison.groups:
        ci = f"{fmt(group.ci[0])} .. {fmt(group.ci[1])}" if group.ci else "(n=1)"
        kind = " class=best" if group is comparison.best else ""
        rows.append(f"<tr{kind}><td>{escape(group.label)}</td><td class=num>{group.n}</td>"
                    f"<td class=num>{fmt(group.mean)}</td><td class=num>{escape(ci)}</td></tr>")
    p = f"Welch t-test of the top two: p={comparison.p_value:.3g}" if comparison.p_value is not None else ""
    return (f"<div class=scroll><table id=groups><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody>"
            f"</table></div>" + (f"<p class=note>{p}, alpha={comparison.alpha:g}</p>" if p else ""))


def _grid(charts: list[go.Figure], figures: _Figures) -> str:
    return f"<div class=grid>{''.join(f'<div class=chart>{figures.div(fig)}</div>' for fig in charts)}</div>"


class _Figures:
    """Figures as <div>s, numbered in page order; plotly.js goes inline once, with the first."""

    def __init__(self) -> None:
        self.count = 0

    def div(self, fig: go.Figure) -> str:
        self.count += 1
        return fig.to_html(full_html=False, include_plotlyjs=self.count == 1, config=PLOT_CONFIG,
                           div_id=f"chart-{self.count}")


def _has(run: Run, metric: Optional[str]) -> bool:
    value = run.metrics.get(metric) if metric else None
    return value is not None and math.isfinite(value)
