"""Runs that differ only in seed: groups with mean ± 95 % CI and n, a Welch t-test of the top two, and a
best group named only when significant, in the sweep summary and `lmforge report`; one rule for which
way a metric is better (sweep summary, report, Optuna sweeper); the report's charts fit their data."""

from __future__ import annotations

import csv
import json
import math
import re
from html import escape
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from scipy import stats

from conftest import cli, metrics, ok, one_line_error

SEEDS = ["experiment=mnist_mlp", "debug=limit", "trainer.max_epochs=1", "trainer.log_every_n_steps=2", "test=false",
         "data.download=false", "print_config=false", "-m", "seed=0,1,2", "model.activation=relu,tanh"]


@pytest.fixture(scope="module")
def seed_sweep(tmp_path_factory) -> tuple[Path, str]:
    """A real sweep of 2 activations x 3 seeds (6 short MLP runs), and what it printed."""
    root = tmp_path_factory.mktemp("seeds")
    proc = ok(cli("train", *SEEDS, f"hydra.sweep.dir={root / 'sweep'}", cwd=root))
    return root / "sweep", proc.stdout


@pytest.mark.slow
def test_a_seed_sweep_shows_each_group_with_its_interval_and_tests_the_top_two(seed_sweep):
    sweep, printed = seed_sweep
    summary = json.loads((sweep / "sweep.json").read_text())
    jobs = {job["job"]: job for job in summary["jobs"]}
    assert len(jobs) == 6 and all(job["status"] == "finished" for job in jobs.values())
    found = summary["seed_groups"]
    assert found["metric"] == "val/acc" and found["direction"] == "max" and found["alpha"] == 0.05
    assert {g["group"] for g in found["groups"]} == {"model.activation=relu", "model.activation=tanh"}
    for group in found["groups"]:
        activation = group["group"].split("=")[1]
        members = [n for n, job in jobs.items() if f"model.activation={activation}" in job["overrides"]]
        assert sorted(group["jobs"]) == sorted(members) and group["n"] == 3
        values = [metrics(Path(jobs[n]["run_dir"]))["val/acc"] for n in members]
        assert group["mean"] == pytest.approx(sum(values) / 3)
        assert group["ci_low"] <= group["mean"] <= group["ci_high"]
        low, high = stats.t.interval(0.95, 2, loc=group["mean"], scale=stats.sem(values))
        assert (group["ci_low"], group["ci_high"]) == pytest.approx((low, high))
    top, second = found["groups"]
    assert top["mean"] >= second["mean"]  # best first, higher val/acc is better
    values = {g["group"]: [jobs[n]["metrics"]["val/acc"] for n in g["jobs"]] for g in found["groups"]}
    p = stats.ttest_ind(values[top["group"]], values[second["group"]], equal_var=False).pvalue
    assert found["p_value"] == pytest.approx(p)
    # The verdict, printed at the end of the sweep: a best group only when p < alpha.
    if p < 0.05:
        assert found["best"] == top["group"]
        verdict = f"best: {top['group']} (val/acc"
    else:
        assert found["best"] is None
        verdict = (f"no best group: the top groups {top['group']} and {second['group']} do not differ "
                   f"significantly (Welch t-test p={p:.3g} >= alpha=0.05)")
    assert verdict in printed and found["verdict"].startswith(verdict)
    assert "best: job" not in printed  # no single seed's luck named best
    assert re.search(rf"{re.escape(top['group'])}: [\d.]+ ± [\d.e-]+ \(95% CI [\d.]+\.\.[\d.]+, n=3\)", printed)
    with open(sweep / "sweep.csv") as f:
        rows = list(csv.DictReader(f))
    assert {row["group_n"] for row in rows} == {"3"}
    assert all(float(row["group_ci_low"]) <= float(row["group_mean"]) <= float(row["group_ci_high"]) for row in rows)


@pytest.mark.slow
def test_the_report_of_a_seed_sweep_shows_the_groups_and_a_log_lr_axis(seed_sweep, tmp_path: Path):
    sweep, _ = seed_sweep
    found = json.loads((sweep / "sweep.json").read_text())["seed_groups"]
    proc = ok(cli("report", f"runs=[{sweep}]", f"out={tmp_path / 'report'}", cwd=tmp_path))
    assert found["verdict"] in proc.stdout
    page = (tmp_path / "report" / "report.html").read_text()
    groups = page.split("<table id=groups>")[1].split("</table>")[0]
    rows = re.findall(r"<tr(?: class=best)?><td>(.*?)</td><td class=num>(\d+)</td><td class=num>(.*?)</td>"
                      r"<td class=num>(.*?)</td></tr>", groups)
    assert [(label, n) for label, n, _, _ in rows] == [(g["group"], "3") for g in found["groups"]]
    for (_, _, mean, ci), group in zip(rows, found["groups"]):
        assert float(mean) == pytest.approx(group["mean"], rel=1e-3)
        low, high = (float(x) for x in ci.split(" .. "))
        assert low <= float(mean) <= high
    assert f"p={found['p_value']:.3g}" in page and escape(found["verdict"]) in page
    assert "<tr class=best>" not in page.split("<table id=runs>")[1]  # no single run called best
    # The groups stay the same whichever columns the table shows.
    narrow = ok(cli("report", f"runs=[{sweep}]", "keys=[model.activation]", "alpha=0.5",
                    f"out={tmp_path / 'narrow'}", cwd=tmp_path))
    assert all(f"  {g['group']}: " in narrow.stdout for g in found["groups"])
    assert ("best: " if found["p_value"] < 0.5 else "no best group") in narrow.stdout.splitlines()[-2]

    figures = figure_specs(page)
    lr = [f for f in figures if f["layout"]["title"]["text"] == "learning rate"]
    assert len(lr) == 1 and lr[0]["layout"]["yaxis"]["type"] == "log"
    assert all(f["layout"]["yaxis"].get("autorange") is True for f in figures)  # no fixed ranges
    assert all(f["layout"]["yaxis"].get("type") != "log" for f in figures if f not in lr)


def figure_specs(page: str) -> list[dict]:
    """The data and layout of every chart of a report, as plotly.js is given them."""
    decoder, specs = json.JSONDecoder(), []
    for call in re.split(r"Plotly\.newPlot\(\s*", page)[1:]:
        if not call.startswith('"chart-'):
            continue  # plotly.js's own source
        rest = call.split(",", 1)[1].lstrip()
        data, end = decoder.raw_decode(rest)
        layout, _ = decoder.raw_decode(rest[end:].lstrip().lstrip(",").lstrip())
        specs.append({"data": data, "layout": layout})
    return specs


@pytest.mark.parametrize("metric, expected", [
    ("val/loss", "min"), ("train/loss_epoch", "min"), ("val/bpb", "min"), ("val/ppl", "min"),
    ("val/perplexity", "min"), ("val/bits_per_byte", "min"), ("test/error", "min"), ("val/wer", "min"),
    ("val/cer", "min"), ("train/step_time", "min"), ("latency_ms", "min"), ("peak_mem_gb", "min"),
    ("val/acc", "max"), ("val/accuracy", "max"), ("val/f1", "max"), ("val/precision", "max"),
    ("val/recall", "max"), ("val/auc", "max"), ("val/bleu", "max"), ("val/rouge_l", "max"),
    ("val/exact_match", "max"), ("train/mfu", "max"), ("train/tokens_per_sec", "max"),
    ("throughput", "max"), ("train/samples_per_sec", "max"),
    ("lr-AdamW", None), ("val/score", None), ("grad_norm", None),
])
def test_the_sweep_summary_the_report_and_the_optuna_sweeper_agree_on_the_direction(metric, expected):
    from hydra_plugins.lmforge_optuna_sweeper.sweeper import study_direction
    from lmforge.errors import UserError
    from lmforge.report.collect import Collection
    from lmforge.report.table import direction_of as report_direction
    from lmforge.sweeps.summary import direction_of as summary_direction

    optuna = {"min": "minimize", "max": "maximize", None: None}[expected]
    assert report_direction(metric, Collection([], [])) == expected
    assert summary_direction(metric) == optuna
    config = OmegaConf.create({"optimized_metric": metric, "monitor": "val/loss", "monitor_mode": "min"})
    if expected is None:
        with pytest.raises(UserError, match="hydra.sweeper.direction"):
            study_direction(config, None)
    else:
        assert study_direction(config, None) == optuna
    # A configured direction wins over the name, in all three.
    assert summary_direction(metric, "maximize") == "maximize"
    assert study_direction(config, "maximize") == "maximize"
    monitored = OmegaConf.create({"optimized_metric": metric, "monitor": metric, "monitor_mode": "max"})
    assert study_direction(monitored, None) == "maximize"


def test_group_statistics_match_scipy():
    from lmforge.seed_groups import compare

    a, b = [0.91, 0.93, 0.92, 0.95], [0.85, 0.88, 0.84]
    items = [({"model.activation": "tanh", "seed": str(i)}, v, i) for i, v in enumerate(a)]
    items += [({"model.activation": "relu", "seed": str(i)}, v, 10 + i) for i, v in enumerate(b)]
    items += [({"model.activation": "gelu", "seed": "0"}, 0.5, 20)]  # one run: no interval
    result = compare(items, "val/acc", "max", alpha=0.05)
    top, second, single = result.groups
    assert (top.label, second.label, single.label) == ("model.activation=tanh", "model.activation=relu",
                                                       "model.activation=gelu")
    assert (top.n, top.members, second.n) == (4, [0, 1, 2, 3], 3)
    assert top.ci == pytest.approx(stats.t.interval(0.95, 3, loc=sum(a) / 4, scale=stats.sem(a)))
    assert second.ci == pytest.approx(stats.t.interval(0.95, 2, loc=sum(b) / 3, scale=stats.sem(b)))
    assert single.ci is None and single.describe() == "0.5 (n=1)"
    p = stats.ttest_ind(a, b, equal_var=False).pvalue
    assert result.p_value == pytest.approx(p) and p < 0.05
    assert result.best is top
    assert result.verdict() == (f"best: model.activation=tanh (val/acc 0.9275 vs 0.8567 for model.activation=relu; "
                                f"Welch t-test p={p:.3g} < alpha=0.05)")
    # At a stricter level the same numbers name no best group.
    strict = compare(items, "val/acc", "max", alpha=p / 2)
    assert strict.best is None and strict.verdict().startswith(
        "no best group: the top groups model.activation=tanh and model.activation=relu do not differ significantly")
    # Lower is better: the other order; unknown direction: nothing ranked, nothing best.
    assert [g.label for g in compare(items, "val/loss", "min").groups][0] == "model.activation=gelu"
    unknown = compare(items, "val/score", None)
    assert unknown.best is None and "cannot tell" in unknown.verdict()
    # Runs too few, or without spread, for a t-test: no best group either, and the line says why.
    few = compare(items[:4] + [({"model.activation": "relu", "seed": "0"}, 0.85, 10)], "val/acc", "max")
    assert few.p_value is None and few.best is None and few.verdict() == (
        "no best group: a t-test needs 2 runs in each of the top groups (model.activation=tanh: n=4, "
        "model.activation=relu: n=1)")
    same = compare([({"a": x, "seed": s}, 0.95, 0) for x in "xy" for s in "12"], "val/acc", "max")
    assert same.p_value is None and same.verdict() == (
        "no best group: the top groups a=x and a=y do not differ (every run: val/acc=0.95)")
    # No seed among the differences (a plain grid): no groups.
    assert compare([({"model.activation": x}, 0.9, i) for i, x in enumerate("ab")], "val/acc", "max") is None
    assert math.isclose(top.mean, sum(a) / 4)


def test_report_alpha_out_of_range_is_one_line(tmp_path: Path):
    error = one_line_error(cli("report", f"runs=[{tmp_path}]", "alpha=1.5", cwd=tmp_path))
    assert "alpha=1.5" in error and "between 0 and 1" in error


def test_an_optuna_search_without_a_direction_for_a_metric_of_unknown_direction_is_one_line(tmp_path: Path):
    proc = cli("train", "experiment=mnist_mlp", "hparams_search=optuna_mlp", "-m", "hydra.sweeper.direction=null",
               "optimized_metric=train/elapsed", f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path)
    error = one_line_error(proc)
    assert "hydra.sweeper.direction" in error and "train/elapsed" in error
    assert not list((tmp_path / "sweep").glob("[0-9]*"))  # no trial ran
