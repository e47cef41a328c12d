"""`lmforge report runs=[<sweep or runs>]`: compare runs and sweeps in report.html (curves, sweep charts,
classifiers' confusion matrices), report.csv and a table."""

from omegaconf import DictConfig


def main(cfg: DictConfig):
    import sys
    from pathlib import Path

    from rich.console import Console

    from lmforge.atomic import write_text
    from lmforge.config.validate import validate
    from lmforge.errors import UserError
    from lmforge.report import charts, html
    from lmforge.report.collect import collect, output_dir
    from lmforge.report.confusion import confusion_figures
    from lmforge.report.history import read_history
    from lmforge.report.table import build_table, seed_comparison, to_csv, to_rich
    from lmforge.runs.directory import RunDir
    from lmforge.runs.lock import RunLock

    config = validate(cfg, "report")
    if not 0 < config["alpha"] < 1:
        raise UserError(f"report alpha={config['alpha']}: the significance level must be between 0 and 1 "
                        "(e.g. 0.05)")
    found = collect(config["runs"])
    for run in found.runs:
        if run.path is not None:
            RunDir(run.path).check_links()  # its history and records are read from inside it only
    table = build_table(found, config["metrics"], config["keys"], config["sort_by"], config["sort_order"])
    comparison = seed_comparison(table, found, config["alpha"])
    if comparison:
        table.best = None  # one seed's luck: the best group, if any, is named instead
    out = output_dir(config["out"], found, Path(config["paths"]["log_dir"]))
    RunLock.guard(out)  # a live run's directory is its own; report.html/csv replace only earlier reports

    palette = charts.colors(table.runs)
    histories = {run.label: read_history(run.path) for run in table.runs}
    curves = charts.curve_figures(table, {k: h for k, h in histories.items() if h}, palette)
    sweep_charts = [charts.sweep_figures(sweep, table, palette) for sweep in found.sweeps]
    confusions = confusion_figures(table.runs, palette)
    page = html.render(found, table, palette, curves, sweep_charts, confusions, comparison)

    write_text(out / "report.csv", to_csv(table))
    write_text(out / "report.html", page)

    Console(width=None if sys.stdout.isatty() else 200).print(to_rich(table))  # a pipe: no wrapping
    if comparison:
        print(f"seed groups on {comparison.metric} (mean ± 95% CI, n):")
        for group in comparison.groups:
            print(f"  {group.label}: {group.describe()}")
        print(comparison.verdict())
    print(f"report: {out / 'report.html'}")
