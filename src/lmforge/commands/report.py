"""`lmforge report runs=[<sweep or runs>]`: compare runs and sweeps in report.html (curves, sweep charts,
classifiers' confusion matrices), report.csv and a table."""

from omegaconf import DictConfig


def main(cfg: DictConfig):
    import sys
    from pathlib import Path

    from rich.console import Console

    from lmforge.atomic import write_text
    from lmforge.config.validate import validate
    from lmforge.report import charts, html
    from lmforge.report.collect import collect, output_dir
    from lmforge.report.confusion import confusion_figures
    from lmforge.report.history import read_history
    from lmforge.report.table import build_table, to_csv, to_rich
    from lmforge.runs.directory import RunDir
    from lmforge.runs.lock import RunLock

    config = validate(cfg, "report")
    found = collect(config["runs"])
    for run in found.runs:
        if run.path is not None:
            RunDir(run.path).check_links()  # its history and records are read from inside it only
    table = build_table(found, config["metrics"], config["keys"], config["sort_by"], config["sort_order"])
    out = output_dir(config["out"], found, Path(config["paths"]["log_dir"]))
    RunLock.guard(out)  # a live run's directory is its own; report.html/csv replace only earlier reports

    palette = charts.colors(table.runs)
    histories = {run.label: read_history(run.path) for run in table.runs}
    curves = charts.curve_figures(table, {k: h for k, h in histories.items() if h}, palette)
    sweep_charts = [charts.sweep_figures(sweep, table, palette) for sweep in found.sweeps]
    confusions = confusion_figures(table.runs, palette)
    page = html.render(found, table, palette, curves, sweep_charts, confusions)

    write_text(out / "report.csv", to_csv(table))
    write_text(out / "report.html", page)

    Console(width=None if sys.stdout.isatty() else 200).print(to_rich(table))  # a pipe: no wrapping
    print(f"report: {out / 'report.html'}")
