"""Optuna sweeps through lmforge's own Hydra sweeper: real CLI runs of tiny MLP trials."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.trial import TrialState

from conftest import csv_metric, lmforge, metrics, ok, one_line_error, start

optuna.logging.set_verbosity(optuna.logging.WARNING)


def sweep_args(sweep: Path, n_trials: int, *extra: str) -> list[str]:
    return ["train", "experiment=mnist_mlp", "hparams_search=optuna_mlp", "debug=limit", "data.download=false",
            "print_config=false", "-m", f"hydra.sweeper.n_trials={n_trials}", f"hydra.sweep.dir={sweep}", *extra]


def study_trials(sweep: Path, study_name: str = "debug") -> list[optuna.trial.FrozenTrial]:
    storage = JournalStorage(JournalFileBackend(str(sweep / "optuna.journal")))
    return optuna.load_study(study_name=study_name, storage=storage).get_trials()


def results(sweep: Path) -> dict:
    return yaml.safe_load((sweep / "optimization_results.yaml").read_text())


def job_dirs(sweep: Path) -> set[int]:
    return {int(p.name) for p in sweep.iterdir() if p.is_dir() and p.name.isdigit()}


def test_a_sweep_runs_n_trials_in_the_search_space_and_reports_the_best(tmp_path: Path):
    sweep = tmp_path / "sweep"
    proc = ok(lmforge(*sweep_args(sweep, 3, "trainer.max_epochs=range(1,3)", "data.batch_size=int(interval(16, 64))",
                                  "optimizer.lr=tag(log, interval(0.001, 0.03))"), cwd=tmp_path))
    assert job_dirs(sweep) == {0, 1, 2}
    configs = [yaml.safe_load((sweep / str(n) / ".hydra" / "config.yaml").read_text()) for n in range(3)]
    for config in configs:  # every syntax became its distribution and reached the job with its type
        assert config["model"]["hidden"] in ([64], [128], [256], [128, 64])
        assert config["model"]["activation"] in ("relu", "tanh", "gelu")
        assert config["trainer"]["max_epochs"] in (1, 2)
        assert isinstance(config["data"]["batch_size"], int) and 16 <= config["data"]["batch_size"] <= 64
        assert 0.001 <= config["optimizer"]["lr"] <= 0.03
    values = {n: metrics(sweep / str(n))["val/acc"] for n in range(3)}
    best = results(sweep)
    assert best["best_value"] == pytest.approx(max(values.values()))
    assert best["best_trial"] == max(values, key=values.get) and best["n_trials"] == 3
    assert f"best trial {best['best_trial']}: val/acc=" in proc.stdout


def test_a_bad_search_space_is_one_line_naming_the_override(tmp_path: Path):
    line = one_line_error(lmforge(*sweep_args(tmp_path / "sweep", 2, "optimizer.lr=tag(log, interval(0, 0.1))"),
                                  cwd=tmp_path))
    assert "optimizer.lr=tag(log, interval(0, 0.1))" in line


def test_a_killed_sweep_continues_to_exactly_n_trials_re_running_the_cut_off_trial(tmp_path: Path):
    sweep = tmp_path / "sweep"
    args = sweep_args(sweep, 3, "hydra.sweeper.heartbeat_interval=1")
    log = tmp_path / "first.log"
    with open(log, "w") as out:
        first = start(args, tmp_path, stdout=out, stderr=subprocess.STDOUT, new_session=True)
    try:  # kill the whole sweep once trial 0 is told and trial 1's job has started
        wait_for(lambda: "optuna: trial 0 complete" in log.read_text() and (sweep / "1" / ".hydra").is_dir(),
                 first, log)
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    assert not (sweep / "1" / "metrics.json").exists()

    proc = ok(lmforge(*args, cwd=tmp_path))
    assert "trial 1 was cut off" in proc.stdout
    trials = study_trials(sweep)
    retry = [t for t in trials if t.system_attrs.get("failed_trial") == 1]
    assert trials[1].state == TrialState.FAIL and len(retry) == 1
    assert retry[0].params == trials[1].params and retry[0].state == TrialState.COMPLETE
    # finished: COMPLETE, PRUNED or FAIL, except a cut-off trial, which its re-run replaces
    assert [t.state for t in trials if t.number != 1] == [TrialState.COMPLETE] * 3
    assert results(sweep)["n_trials"] == 3
    assert {n for n in job_dirs(sweep) if (sweep / str(n) / "metrics.json").exists()} == {0, 2, 3}


@pytest.mark.slow
def test_two_sweep_processes_share_one_study_without_duplicates(tmp_path: Path):
    sweep = tmp_path / "sweep"
    logs = [tmp_path / f"process{i}.log" for i in range(2)]  # files: a full pipe would stall a process
    procs = []
    for log in logs:
        with open(log, "w") as out:
            procs.append(start(sweep_args(sweep, 4, "hydra.sweeper.pruner=null"), tmp_path, stdout=out,
                               stderr=subprocess.STDOUT))
    codes = [p.wait(timeout=600) for p in procs]
    outputs = [log.read_text() for log in logs]
    assert codes == [0, 0], [out[-3000:] for out in outputs]
    trials = study_trials(sweep)
    assert [t.number for t in trials] == [0, 1, 2, 3]
    assert all(t.state == TrialState.COMPLETE for t in trials)
    assert job_dirs(sweep) == {0, 1, 2, 3} and all((sweep / str(n) / "metrics.json").exists() for n in range(4))
    told = [line for out in outputs for line in out.splitlines() if re.match(r"optuna: trial \d+ complete", line)]
    assert len(told) == 4  # each trial run and told by exactly one of the processes
    assert len({t.params["optimizer.lr"] for t in trials}) == 4  # the joining process drew its own points


def test_a_trial_worse_than_the_median_is_pruned_and_stops_early(tmp_path: Path):
    sweep = tmp_path / "sweep"
    prune_early = "hydra.sweeper.pruner.n_startup_trials=1"
    ok(lmforge(*sweep_args(sweep, 1, prune_early, "optimizer.lr=0.01"), cwd=tmp_path))
    # the same study continued with a learning rate too small to learn anything
    proc = ok(lmforge(*sweep_args(sweep, 2, prune_early, "optimizer.lr=0.0000001"), cwd=tmp_path))
    trials = study_trials(sweep)
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.PRUNED]
    assert len(csv_metric(sweep / "1", "val/acc")) == 1 < len(csv_metric(sweep / "0", "val/acc")) == 3
    assert "optuna: trial 1 pruned" in proc.stdout
    assert "Skipped telling trial" not in proc.stdout + proc.stderr  # no noise after a pruned trial
    assert results(sweep)["trials"] == {"complete": 1, "pruned": 1, "fail": 0}


def test_a_failing_trial_is_failed_in_the_study_and_the_sweep_goes_on(tmp_path: Path):
    sweep = tmp_path / "sweep"
    proc = lmforge(*sweep_args(sweep, 4, "model.activation=choice(relu,nope)"), cwd=tmp_path)
    assert proc.returncode == 1 and "jobs failed" in proc.stdout  # the sweep ran to its end, then says so
    trials = study_trials(sweep)
    assert len(trials) == 4 and any(t.state == TrialState.FAIL for t in trials)
    for trial in trials:  # the job's error is caught by lmforge's job wrapper: it returns nothing
        assert (trial.state == TrialState.FAIL) == (trial.params["model.activation"] == "nope")
    assert results(sweep)["n_trials"] == 4


def test_seeds_per_trial_scores_each_trial_by_the_mean_over_seeds_and_the_summary_groups_them(tmp_path: Path):
    sweep = tmp_path / "sweep"
    ok(lmforge(*sweep_args(sweep, 2, "hydra.sweeper.seeds_per_trial=2", "seed=5"), cwd=tmp_path))
    assert job_dirs(sweep) == {0, 1, 2, 3}  # trial t's jobs are 2t and 2t+1
    seeds = [yaml.safe_load((sweep / str(n) / ".hydra" / "config.yaml").read_text())["seed"] for n in range(4)]
    assert seeds == [5, 6, 5, 6]
    values = [metrics(sweep / str(n))["val/acc"] for n in range(4)]
    trials = study_trials(sweep)
    for trial in trials:  # the trial's value is its seeds' mean, and the pruning callback reported to it
        assert trial.value == pytest.approx((values[2 * trial.number] + values[2 * trial.number + 1]) / 2)
        assert trial.user_attrs["values_per_seed"] == pytest.approx(values[2 * trial.number:2 * trial.number + 2])
        assert trial.intermediate_values
    best = results(sweep)
    assert best["best_run_dirs"] == [str(sweep / str(2 * best["best_trial"] + i)) for i in range(2)]
    groups = json.loads((sweep / "sweep.json").read_text())["seed_groups"]["groups"]
    assert sorted(g["jobs"] for g in groups) == [[0, 1], [2, 3]] and {g["n"] for g in groups} == {2}

    line = one_line_error(lmforge(*sweep_args(tmp_path / "bad", 2, "hydra.sweeper.seeds_per_trial=2",
                                              "seed=choice(1,2)"), cwd=tmp_path))
    assert "seeds_per_trial" in line and "seed" in line


@pytest.mark.slow
def test_the_language_model_preset_minimizes_val_bpb(tmp_path: Path, corpus: Path):
    sweep = tmp_path / "sweep"
    proc = ok(lmforge("train", "hparams_search=optuna_lm", "-m", "hydra.sweeper.n_trials=2", f"hydra.sweep.dir={sweep}",
                      f"data.paths=[{corpus}]", "tokenizer.vocab_size=512", "trainer.max_steps=6",
                      "trainer.val_check_interval=3", "data.val_windows=8", f"paths.cache_dir={tmp_path / 'cache'}",
                      "print_config=false", cwd=tmp_path))
    trials = study_trials(sweep, "pretrain_tiny")
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2
    assert [sorted(t.intermediate_values) for t in trials] == [[3, 6]] * 2  # reported at each validation
    assert results(sweep)["best_value"] == pytest.approx(min(metrics(sweep / str(n))["val/bpb"] for n in (0, 1)))
    assert "val/bpb=" in proc.stdout


def wait_for(condition, proc: subprocess.Popen, log: Path, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"the sweep ended early:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"timed out:\n{log.read_text()[-3000:]}"
        time.sleep(0.2)
