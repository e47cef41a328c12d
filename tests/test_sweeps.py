"""Sweeps that work as written: the summary of a grid, failing jobs that do not stop it, DDP jobs
inside sweeps (local and joblib launchers), parallel joblib jobs on their own device slots, the
SLURM code path through submitit's local executor (signal, checkpoint, requeue, continue), and
the W&B sweep files of sweeps/ run the way an agent runs them."""

from __future__ import annotations

import csv
import json
import random
import signal
import time
from pathlib import Path

import pytest
import yaml

from conftest import lmforge, metrics, ok, start

REPO = Path(__file__).resolve().parents[1]
QUICK = ["experiment=mnist_mlp", "debug=limit", "data.download=false"]


def summary(sweep: Path) -> dict:
    return json.loads((sweep / "sweep.json").read_text())


def test_a_grid_sweep_keeps_a_summary_and_prints_the_best_job(tmp_path: Path):
    proc = ok(lmforge("train", *QUICK, "-m", "model.activation=relu,sigmoid,tanh", cwd=tmp_path))
    sweeps = list((tmp_path / "logs" / "debug" / "multiruns").iterdir())
    assert len(sweeps) == 1  # the default sweep directory, created from any working directory
    sweep = sweeps[0]
    result = summary(sweep)
    assert result["optimized_metric"] == "val/acc" and result["direction"] == "maximize"
    assert result["params"] == ["model.activation"]
    assert [job["status"] for job in result["jobs"]] == ["finished"] * 3
    for job in result["jobs"]:
        assert job["metrics"] == metrics(Path(job["run_dir"]))
    with open(sweep / "sweep.csv") as f:
        rows = list(csv.DictReader(f))
    assert [row["job"] for row in rows] == ["0", "1", "2"] and "val/acc" in rows[0]
    # One line per job when it starts, no config tree; at the end the table best first, the sweep dir.
    starts = [line for line in proc.stdout.splitlines() if line.startswith("[job ")]
    assert len(starts) == 3 and "_target_" not in proc.stdout
    accuracies = {job["job"]: job["metrics"]["val/acc"] for job in result["jobs"]}
    best = max(accuracies, key=accuracies.get)
    assert f"best: job {best} " in proc.stdout
    assert proc.stdout.strip().splitlines()[-1] == f"sweep directory: {sweep}"


def test_a_failing_job_is_recorded_and_the_sweep_goes_on(tmp_path: Path):
    sweep = tmp_path / "sweep"
    proc = lmforge("train", *QUICK, "-m", "model.activation=relu,swish,tanh", f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert proc.returncode == 1  # the sweep ran to its end, and says that a job failed
    jobs = summary(sweep)["jobs"]
    assert [job["status"] for job in jobs] == ["finished", "failed", "finished"]
    assert "model.activation" in jobs[1]["error"] and "swish" in jobs[1]["error"]
    assert "[job 1] error: config key 'model.activation'" in proc.stderr
    assert "1 of 3 jobs failed" in proc.stdout


def test_a_grid_sweep_run_again_into_its_directory_changes_nothing_unless_asked(tmp_path: Path):
    sweep = tmp_path / "sweep"
    command = ("train", *QUICK, "-m", "model.activation=relu,tanh", f"hydra.sweep.dir={sweep}")
    ok(lmforge(*command, cwd=tmp_path))
    files = {p: p.read_bytes() for p in sweep.rglob("*") if p.is_file() and p.suffix in (".json", ".csv")}
    again = lmforge(*command, cwd=tmp_path)
    assert again.returncode == 2 and f"error: {sweep} already holds a sweep (2 jobs)" in again.stderr
    assert {p: p.read_bytes() for p in files} == files
    # Without the summary, each job is refused its directory: the earlier runs' records stay theirs.
    (sweep / "sweep.json").unlink()
    assert lmforge(*command, cwd=tmp_path).returncode == 1
    assert {p: p.read_bytes() for p in files if p.parent != sweep} == {p: b for p, b in files.items() if p.parent != sweep}
    assert [(job["status"], job["metrics"]) for job in summary(sweep)["jobs"]] == [("failed", {})] * 2
    assert "already holds a run (lmforge train, finished" in summary(sweep)["jobs"][0]["error"]
    ok(lmforge(*command, "overwrite=true", cwd=tmp_path))
    assert [job["status"] for job in summary(sweep)["jobs"]] == ["finished"] * 2


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["local", "joblib"])
def test_ddp_jobs_inside_a_sweep_are_one_process_group_and_one_run_each(launcher: str, tmp_path: Path):
    logs = tmp_path / "logs"
    ok(lmforge("train", *QUICK, "trainer=ddp_cpu", "logger=wandb", f"launcher={launcher}", "-m", "seed=1,2",
               f"paths.log_dir={logs}", "print_config=false", cwd=tmp_path,
               env={"WANDB_MODE": "offline", "HOME": str(tmp_path)}))
    sweeps = list((logs / "debug" / "multiruns").iterdir())
    assert len(sweeps) == 1, sweeps  # no rank re-ran the sweep
    assert not (logs / "debug" / "runs").exists()
    sweep = sweeps[0]
    assert [job["status"] for job in summary(sweep)["jobs"]] == ["finished", "finished"]
    for job in ("0", "1"):
        run = sweep / job
        assert "test/acc" in metrics(run)
        assert len(list((run / "wandb").glob("offline-run-*"))) == 1  # one W&B run, by rank 0
        assert (run / "train_rank_1.log").is_file()  # rank 1 ran this job's command, in this job's dir


RENDEZVOUS = '''
import os, time
import lightning as L

class Rendezvous(L.Callback):
    """Wait at the start of training until `parties` jobs are training at once (or `timeout` s pass)."""

    def __init__(self, folder, parties=2, timeout=120.0):
        self.folder, self.parties, self.timeout = folder, parties, timeout

    def on_train_start(self, trainer, pl_module):
        os.makedirs(self.folder, exist_ok=True)
        open(os.path.join(self.folder, f"{os.getpid()}-{time.time_ns()}"), "w").close()
        deadline = time.time() + self.timeout
        while len(os.listdir(self.folder)) < self.parties and time.time() < deadline:
            time.sleep(0.05)
'''


@pytest.mark.slow
def test_joblib_runs_jobs_in_parallel_each_on_its_own_device_slot(tmp_path: Path):
    """Two jobs in two worker processes, training at the same time. Each job waits at the start of
    training for the other (up to 2 minutes): jobs in parallel meet there, so their run intervals
    overlap however long worker start-up takes; jobs one after the other cannot (the first times out
    alone and ends before the second starts)."""
    import os

    helpers = tmp_path / "helpers"
    helpers.mkdir()
    (helpers / "rendezvous.py").write_text(RENDEZVOUS)
    sweep = tmp_path / "sweep"
    ok(lmforge("train", *QUICK, "launcher=joblib", "-m", "seed=1,2", "+callbacks.rendezvous._target_=rendezvous.Rendezvous",
               f"+callbacks.rendezvous.folder={tmp_path / 'arrived'}", f"hydra.sweep.dir={sweep}", "print_config=false",
               cwd=tmp_path, env={"CUDA_VISIBLE_DEVICES": "4,5",
                                  "PYTHONPATH": os.pathsep.join([str(helpers), os.environ.get("PYTHONPATH", "")])}))
    infos = [json.loads((sweep / job / "run.json").read_text()) for job in ("0", "1")]
    assert infos[0]["pid"] != infos[1]["pid"]  # two worker processes
    (a0, a1), (b0, b1) = [(i["start_time"], i["end_time"]) for i in infos]
    assert a0 < b1 and b0 < a1, f"the two jobs did not overlap in time: {(a0, a1)}, {(b0, b1)}"
    assert sorted(i["visible_devices"] for i in infos) == ["4", "5"]
    assert all(metrics(sweep / job)["test/acc"] > 0.5 for job in ("0", "1"))  # chance is 0.1


@pytest.mark.slow
def test_slurm_local_job_is_signalled_checkpoints_requeues_and_continues(tmp_path: Path):
    import os

    sweep = tmp_path / "sweep"
    args = ["experiment=mnist_mlp", "data.download=false", "trainer.max_epochs=30", "callbacks=default",
            "print_config=false", "-m", "launcher=slurm_local", "seed=7", f"hydra.sweep.dir={sweep}"]
    proc = start(["train", *args], tmp_path)
    info_file = sweep / "0" / "run.json"
    deadline = time.time() + 300
    while time.time() < deadline and not (sweep / "0" / "checkpoints" / "last.ckpt").is_file():
        time.sleep(0.2)
    first = json.loads(info_file.read_text())
    os.kill(first["pid"], signal.SIGUSR2)  # what SLURM sends signal_delay_s before the time limit
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-4000:]
    info = json.loads(info_file.read_text())
    assert info["status"] == "finished" and info["attempt"] == 2 and info["pid"] != first["pid"]
    assert info["resumed_from"]  # the checkpoint of the signal, or the validation's at the same step
    with open(sweep / "0" / "csv" / "metrics.csv") as f:
        validated = [int(row["epoch"]) for row in csv.DictReader(f) if row.get("val/loss")]
    assert validated == list(range(30))  # every epoch validated once, across the requeue
    assert [job["status"] for job in summary(sweep)["jobs"]] == ["finished"]


def draw(spec: dict, rng: random.Random):
    """One value of a W&B sweep parameter, as an agent draws it."""
    if "values" in spec:
        return rng.choice(spec["values"])
    if spec.get("distribution") == "log_uniform_values":
        import math

        return math.exp(rng.uniform(math.log(spec["min"]), math.log(spec["max"])))
    return rng.uniform(spec["min"], spec["max"])


@pytest.mark.parametrize("sweep_file", sorted(p.name for p in (REPO / "sweeps").glob("*.yaml")))
def test_wandb_sweep_files_run_as_an_agent_runs_them(sweep_file: str, tmp_path: Path):
    spec = yaml.safe_load((REPO / "sweeps" / sweep_file).read_text())
    params = {name: draw(p, random.Random(0)) for name, p in spec["parameters"].items()}
    command = []
    for part in spec["command"]:
        if part == "${env}":
            continue
        if part == "${args_no_hyphens}":
            command += [f"{k}={v}" for k, v in params.items()]
        elif part == "${program}" or part == spec["program"]:
            continue
        else:
            command.append(part)
    assert command[0] == "train"
    run = tmp_path / "run"
    ok(lmforge(*command, "debug=fdr", f"hydra.run.dir={run}", cwd=tmp_path,
               env={"WANDB_MODE": "offline", "WANDB_SWEEP_ID": "abc123", "HOME": str(tmp_path)}))
    config = yaml.safe_load((run / ".hydra" / "config.yaml").read_text())
    for key, value in params.items():
        node = config
        for part in key.split("."):
            node = node[part]
        assert str(node).replace(" ", "") == str(value).replace(" ", "") or node == pytest.approx(value)
    assert config["logger"]["wandb"]["group"] == "abc123"  # grouped under the W&B sweep
    assert spec["metric"]["name"] in metrics(run) or spec["metric"]["name"].replace("val/", "test/") in metrics(run)
