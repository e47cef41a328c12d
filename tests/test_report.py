"""`lmforge report` on real runs and sweeps: report.html rendered in headless Chromium, report.csv,
ranking in the metric's direction, failed and pruned jobs shown, bad input as one line."""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import built_once, cli, lmforge, metrics, ok, one_line_error, small_corpus

JOBS = {("relu", "0.01"), ("relu", "0.001"), ("tanh", "0.01"), ("tanh", "0.001")}


@pytest.fixture(scope="session")
def sweep(tmp_path_factory) -> Path:
    """A real 2x2 grid of short MLP runs (activation x learning rate), logging every other step."""
    def build(root: Path) -> None:
        ok(lmforge("train", "experiment=mnist_mlp", "debug=limit", "data.download=false", "print_config=false",
                   "trainer.log_every_n_steps=2", "-m", "model.activation=relu,tanh", "optimizer.lr=0.01,0.001",
                   f"hydra.sweep.dir={root / 'sweep'}", cwd=root))

    return built_once(tmp_path_factory, "report", build) / "sweep"


def copy_of(sweep: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "sweep"
    shutil.copytree(sweep, copy, ignore=shutil.ignore_patterns("checkpoints", "report.*"))
    return copy


def read_csv(file: Path) -> list[dict]:
    with open(file, newline="") as f:
        return list(csv.DictReader(f))


def chromium_dom(page: Path, tmp_path: Path, screenshot: Path | None = None) -> str:
    """The page's DOM after its scripts ran, from a headless Chromium that reaches nothing outside."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    assert browser, "headless Chromium is needed: apt-get install -y chromium"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
             f"--user-data-dir={tmp_path / 'chromium-profile'}", "--virtual-time-budget=15000"]
    if screenshot:
        subprocess.run([browser, *flags, "--window-size=1400,2600", f"--screenshot={screenshot}",
                        page.as_uri()], capture_output=True, timeout=120, check=True)
    proc = subprocess.run([browser, *flags, "--dump-dom", page.as_uri()], capture_output=True, text=True,
                          timeout=120, check=True)
    return proc.stdout


def rendered_charts(dom: str) -> dict[str, str]:
    """chart div id -> its rendered markup, for every plotly chart that drew its SVG."""
    chunks = re.split(r'(?=<div id="chart-\d+")', dom)[1:]
    return {re.match(r'<div id="(chart-\d+)"', c).group(1): c for c in chunks if 'class="main-svg"' in c}


def test_report_of_a_sweep_renders_curves_table_and_parameters_in_a_browser(sweep: Path, tmp_path: Path):
    proc = ok(cli("report", f"runs=[{sweep}]", cwd=tmp_path))
    page = sweep / "report.html"
    assert proc.stdout.strip().splitlines()[-1] == f"report: {page}"
    assert not list(tmp_path.iterdir())  # nothing written where it ran
    html = page.read_text()
    # Self-contained: plotly.js inline once, nothing fetched from the network.
    assert html.count("window.PlotlyConfig") == 1 and len(html) > 3_000_000
    assert not re.search(r"""<(script|link|img)[^>]+(src|href)=["']?https?:""", html)

    # Ranked by what the experiment optimizes (val/acc, higher is better), best first.
    rows = read_csv(sweep / "report.csv")
    assert [r["status"] for r in rows] == ["finished"] * 4
    assert {(r["model.activation"], r["optimizer.lr"]) for r in rows} == JOBS
    accs = [float(r["val/acc"]) for r in rows]
    assert accs == sorted(accs, reverse=True)
    assert accs[0] == max(metrics(sweep / str(job))["val/acc"] for job in range(4))
    assert "best val/acc first (max)" in proc.stdout

    dom = chromium_dom(page, tmp_path, screenshot=tmp_path / "report.png")
    charts = rendered_charts(dom)
    # val/acc by job, one chart per swept parameter, then the curves: loss, acc, the runs' telemetry
    # (data_wait, peak_mem_gb), learning rate; then each job's confusion matrix.
    assert len(charts) == len(re.findall(r'<div id="chart-\d+"', dom)) == 12
    assert [k for k, c in charts.items() if 'class="hm"' in c] == ["chart-9", "chart-10", "chart-11", "chart-12"]
    titles = " ".join(charts.values())
    for title in ("val/acc by job", "model.activation", "optimizer.lr", "loss", "acc", "data_wait", "peak_mem_gb",
                  "learning rate"):
        assert f">{title}<" in titles, title
    assert charts["chart-4"].count('class="scatterlayer') == 1
    assert len(re.findall(r'class="trace scatter', charts["chart-4"])) == 8  # 4 runs x (train, val)
    table = dom.split('<table id="runs">')[1].split("</table>")[0]
    body_rows = re.findall(r"<tr class=\"(\w+)\">(.*?)</tr>", table)
    assert len(body_rows) == 4 and body_rows[0][0] == "best"
    assert f">{rows[0]['run']}<" in body_rows[0][1]
    assert (tmp_path / "report.png").stat().st_size > 50_000


def test_sweep_json_failed_and_pruned_jobs_are_shown_not_dropped(sweep: Path, tmp_path: Path):
    """The lead's sweep.json contract: jobs listed with status, run dirs that moved, jobs without one."""
    copy = copy_of(sweep, tmp_path)
    jobs = [{"job": n, "overrides": _overrides(copy / str(n)), "status": "finished",
             "run_dir": f"/moved/away/{n}", "metrics": metrics(copy / str(n))} for n in range(4)]
    common = [o for o in _overrides(copy / "0") if not o.startswith(("model.activation=", "optimizer.lr="))]
    jobs += [{"job": 4, "overrides": [*common, "model.activation=sigmoid", "optimizer.lr=0.1"],
              "status": "failed", "run_dir": None, "metrics": {}},
             {"job": 5, "overrides": [*common, "model.activation=gelu", "optimizer.lr=0.1"], "status": "pruned",
              "run_dir": None, "metrics": {"val/loss": 2.3}}]
    (copy / "sweep.json").write_text(json.dumps({
        "sweep_dir": "/moved/away", "command": "train", "optimized_metric": "val/loss", "direction": "minimize",
        "params": ["model.activation", "optimizer.lr"], "jobs": jobs}))
    ok(cli("report", f"runs=[{copy}]", cwd=tmp_path))
    rows = read_csv(copy / "report.csv")
    assert list(rows[0])[:4] == ["run", "status", "model.activation", "optimizer.lr"]
    assert [r["status"] for r in rows] == ["finished"] * 4 + ["failed", "pruned"]
    losses = [float(r["val/loss"]) for r in rows[:4]]
    assert losses == sorted(losses)  # the sweep's direction: lowest val/loss first
    assert rows[4]["model.activation"] == "sigmoid" and rows[4]["val/loss"] == ""
    assert rows[5]["model.activation"] == "gelu" and float(rows[5]["val/loss"]) == 2.3

    dom = chromium_dom(copy / "report.html", tmp_path)
    assert len(rendered_charts(dom)) == 8 + 4  # and the finished jobs' confusion matrices
    assert "1 of 6 jobs without val/loss (not plotted): 4 (failed)" in dom
    assert '<tr class="failed">' in dom and '<tr class="pruned">' in dom
    assert "pruned / failed" in dom  # the pruned job's cross in the parameter charts' legend


def _overrides(run: Path) -> list[str]:
    import yaml

    return yaml.safe_load((run / ".hydra" / "overrides.yaml").read_text())


def test_runs_by_glob_go_to_out_ranked_as_asked_with_wall_time_curves(sweep: Path, tmp_path: Path):
    copy = copy_of(sweep, tmp_path)
    (copy / "sweep.json").unlink(missing_ok=True)
    (copy / "multirun.yaml").unlink()  # now just four run directories
    for job in ("0", "1"):  # as written by an lmforge that logs wall time (`train/elapsed`)
        _add_elapsed(copy / job / "csv" / "metrics.csv")
    out = tmp_path / "out"
    proc = ok(cli("report", f"runs=[{copy}/*]", "sort_by=val/loss", "sort_order=max",
                      "metrics=[val/loss,test/acc]", f"out={out}", cwd=tmp_path))
    assert proc.stdout.strip().splitlines()[-1] == f"report: {out / 'report.html'}"
    rows = read_csv(out / "report.csv")
    assert list(rows[0]) == ["run", "status", "model.activation", "optimizer.lr", "val/loss", "test/acc"]
    losses = [float(r["val/loss"]) for r in rows]
    assert losses == sorted(losses, reverse=True)  # sort_order=max: as asked, highest first
    dom = chromium_dom(out / "report.html", tmp_path)
    assert len(rendered_charts(dom)) == 5 + 4  # no sweep: only the curves (and confusion matrices)
    assert ">wall time<" in dom and ">step<" in dom  # the x-axis switch

    proc = ok(cli("report", f"runs=[{copy}/*]", cwd=tmp_path))  # no out=: a new folder under logs/
    (page,) = (tmp_path / "logs" / "report").glob("*/report.html")
    assert proc.stdout.strip().splitlines()[-1] == f"report: {page}"


def _add_elapsed(file: Path) -> None:
    rows = read_csv(file)
    if "train/elapsed" in rows[0]:
        return
    for row in rows:
        row["train/elapsed"] = f"{float(row['step']) * 0.7:.3f}" if row["train/loss"] else ""
    with open(file, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def test_a_sweep_without_sweep_json_infers_its_parameters(sweep: Path, tmp_path: Path):
    copy = copy_of(sweep, tmp_path)
    (copy / "sweep.json").unlink(missing_ok=True)
    ok(cli("report", f"runs=[{tmp_path}]", cwd=tmp_path))  # found by searching the folder
    rows = read_csv(copy / "report.csv")
    assert list(rows[0])[:4] == ["run", "status", "model.activation", "optimizer.lr"]
    assert sorted(r["run"] for r in rows) == ["0", "1", "2", "3"]
    assert ">optimizer.lr<" in (copy / "report.html").read_text()


def test_bad_input_is_one_line_naming_the_file_or_key(sweep: Path, tmp_path: Path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no runs" in one_line_error(cli("report", f"runs=[{empty}]", cwd=tmp_path))
    assert "nothing matches" in one_line_error(cli("report", f"runs=[{empty}/*]", cwd=tmp_path))
    line = one_line_error(cli("report", f"runs=[{sweep}]", "sort_by=val/acu", cwd=tmp_path))
    assert "sort_by" in line and "val/acu" in line and "did you mean 'val/acc'" in line
    line = one_line_error(cli("report", f"runs=[{sweep}]", "sort_by=lr-Adam", cwd=tmp_path))
    assert "sort_order=min or sort_order=max" in line
    line = one_line_error(cli("report", f"runs=[{sweep}]", "sort_order=best", cwd=tmp_path))
    assert "sort_order" in line
    line = one_line_error(cli("report", f"runs=[{sweep}]", "keys=[model.activaton]", cwd=tmp_path))
    assert "model.activaton" in line and "did you mean 'model.activation'" in line

    copy = copy_of(sweep, tmp_path)
    (copy / "2" / "csv" / "metrics.csv").write_text("epoch,step,val/loss\n0,4,0.5\n0,9,oops\n")
    line = one_line_error(cli("report", f"runs=[{copy}]", cwd=tmp_path))
    assert f"{copy / '2' / 'csv' / 'metrics.csv'}:3" in line and "'val/loss'" in line
    (copy / "1" / "metrics.json").write_text('{"val/loss": 1.2,')
    line = one_line_error(cli("report", f"runs=[{copy}]", cwd=tmp_path))
    assert str(copy / "1" / "metrics.json") in line and "not valid JSON" in line
    assert not (copy / "report.html").exists()  # nothing half-written


def _small_run(path: Path, loss: float = 1.0) -> Path:
    """A run directory as lmforge writes it, without training: run.json, metrics.json, its config."""
    (path / ".hydra").mkdir(parents=True)
    (path / "run.json").write_text(json.dumps({"command": "train", "status": "finished"}))
    (path / "metrics.json").write_text(json.dumps({"val/loss": loss}))
    (path / ".hydra" / "config.yaml").write_text("optimizer:\n  lr: 0.01\n")
    (path / ".hydra" / "hydra.yaml").write_text("hydra:\n  runtime:\n    choices:\n      model: mlp\n")
    (path / ".hydra" / "overrides.yaml").write_text("- optimizer.lr=0.01\n")
    return path


@pytest.mark.parametrize("name, text", [
    ("run.json", "[1, 2]"), ("run.json", '"finished"'), (".hydra/config.yaml", "- a"),
    (".hydra/config.yaml", "just a string"), (".hydra/hydra.yaml", "- a"), (".hydra/hydra.yaml", "hydra: [1]"),
    (".hydra/hydra.yaml", "hydra:\n  runtime:\n    choices: 3"), (".hydra/overrides.yaml", "a: 1")])
def test_a_run_file_of_the_wrong_shape_is_one_line_naming_it(tmp_path: Path, name: str, text: str):
    run = _small_run(tmp_path / "run")
    (run / name).write_text(text)
    line = one_line_error(cli("report", f"runs=[{run}]", f"out={tmp_path / 'out'}", cwd=tmp_path))
    assert str(run / name) in line and "expected" in line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("summary, what", [
    ({"jobs": [{"job": 0, "metrics": [1]}]}, "'metrics'"), ({"jobs": [{"job": 0}], "params": 5}, "'params'"),
    ({"jobs": [{"job": 0, "overrides": "lr=1"}]}, "'overrides'"), ({"jobs": [{"job": 0, "run_dir": 7}]}, "'run_dir'")])
def test_a_sweep_json_of_the_wrong_shape_is_one_line_naming_it(tmp_path: Path, summary: dict, what: str):
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "sweep.json").write_text(json.dumps(summary))
    line = one_line_error(cli("report", f"runs=[{sweep}]", cwd=tmp_path))
    assert str(sweep / "sweep.json") in line and what in line
    (sweep / "multirun.yaml").write_text("hydra: [sweeper]")  # the older form, from a plain Hydra sweep
    (sweep / "sweep.json").unlink()
    _small_run(sweep / "0")
    line = one_line_error(cli("report", f"runs=[{sweep}]", cwd=tmp_path))
    assert str(sweep / "multirun.yaml") in line and "'hydra' as a mapping" in line


def test_out_never_replaces_what_lmforge_did_not_write(tmp_path: Path):
    run = _small_run(tmp_path / "run")
    taken = tmp_path / "notes.txt"
    taken.write_text("mine")
    line = one_line_error(cli("report", f"runs=[{run}]", f"out={taken}", cwd=tmp_path))
    assert str(taken) in line and "not a folder" in line
    assert taken.read_text() == "mine"
    line = one_line_error(cli("report", f"runs=[{run}]", f"out={taken}/sub", cwd=tmp_path))
    assert "not a directory" in line and taken.read_text() == "mine"

    out = tmp_path / "out"
    out.mkdir()
    for name in ("report.html", "report.csv"):
        (out / name).write_text("<html>the user's own page</html>")
        line = one_line_error(cli("report", f"runs=[{run}]", f"out={out}", cwd=tmp_path))
        assert str(out / name) in line and "not an lmforge report" in line
        assert (out / name).read_text() == "<html>the user's own page</html>"
        (out / name).unlink()
    ok(cli("report", f"runs=[{run}]", f"out={out}", cwd=tmp_path))
    first = (out / "report.html").read_text()
    (run / "metrics.json").write_text(json.dumps({"val/loss": 0.5}))
    ok(cli("report", f"runs=[{run}]", f"out={out}", cwd=tmp_path))  # its own previous report: replaced
    assert (out / "report.html").read_text() != first and read_csv(out / "report.csv")[0]["val/loss"] == "0.5"


def test_report_of_a_logs_folder_holding_a_tokenizer_run(tmp_path: Path):
    """A default `lmforge report` (runs=[logs]) takes every lmforge run, the tokenizer's too: its
    metrics.json holds numbers only, where the tokenizer was saved is in its run.json."""
    corpus = small_corpus(tmp_path / "corpus")
    _small_run(tmp_path / "logs" / "train" / "runs" / "a")
    ok(cli("tokenizer", f"data.paths=[{corpus}]", "tokenizer.vocab_size=300", f"paths.cache_dir={tmp_path / 'cache'}",
           cwd=tmp_path))
    (tok_run,) = (tmp_path / "logs" / "tokenizer" / "runs").iterdir()
    assert set(metrics(tok_run)) == {"vocab_size", "bytes_per_token"}
    info = json.loads((tok_run / "run.json").read_text())
    assert info["command"] == "tokenizer" and info["status"] == "finished"
    assert Path(info["tokenizer_dir"], "tokenizer.json").is_file()
    ok(cli("report", "out=rep", cwd=tmp_path))
    rows = {r["run"]: r for r in read_csv(tmp_path / "rep" / "report.csv")}
    assert rows.keys() == {"train/runs/a", f"tokenizer/runs/{tok_run.name}"}
    assert float(rows[f"tokenizer/runs/{tok_run.name}"]["vocab_size"]) == 300
