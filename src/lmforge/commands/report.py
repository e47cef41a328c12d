"""`lmforge report runs=[logs/mnist_mlp/multiruns/<sweep>]`: a table comparing runs and sweeps."""

from omegaconf import DictConfig


def main(cfg: DictConfig):
    from pathlib import Path

    from rich.console import Console
    from rich.table import Table

    from lmforge.atomic import write_text
    from lmforge.config.validate import validate
    from lmforge.report.compare import compare, to_csv, to_markdown

    config = validate(cfg, "report")
    header, rows = compare(config["runs"], config["metrics"], config["sort_by"], config["keys"])
    table = Table(*header, title=f"{len(rows)} runs")
    for row in rows:
        table.add_row(*[f"{v:.4g}" if isinstance(v, float) else ("" if v is None else str(v)) for v in row])
    Console(width=200).print(table)
    out = Path(config["paths"]["output_dir"])
    write_text(out / "report.csv", to_csv(header, rows))
    write_text(out / "report.md", to_markdown(header, rows))
    print(f"report: {out / 'report.md'} and report.csv")
