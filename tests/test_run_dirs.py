"""No command destroys a run: links out of a run directory are refused, a live run's directory is
refused to every other command, no command replaces what it reads, and a finished sweep launched
again keeps its finished jobs (and its grid)."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import cli, ok, one_line_error

pytestmark = pytest.mark.xdist_group("run_dirs")  # its tests share one module-scoped finished run

QUICK = ["experiment=mnist_mlp", "data.download=false", "print_config=false", "debug=limit", "trainer.max_epochs=1",
         "logger=csv"]


def files(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (links not followed) with its bytes: what "untouched" compares. Job logs
    are left out: Hydra opens the command's own before it runs, and in-process (one pid for both runs)
    the app cannot tell the copied run's record from its own to remove that empty log."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and not p.is_symlink() and p.name != ".lock" and p.suffix != ".log"}


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """One tiny finished MLP run (copied by tests that could damage it)."""
    root = tmp_path_factory.mktemp("finished")
    ok(cli("train", *QUICK, f"hydra.run.dir={root / 'run'}", cwd=root))
    return root / "run"


@pytest.fixture
def run(finished: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(finished, tmp_path / "run"))


@pytest.fixture
def live(tmp_path: Path):
    """Hold a directory's run lock from another process, as a training run would, while a test runs."""
    holders = []

    def hold(folder: Path) -> None:
        code = ("import sys; from lmforge.runs.lock import RunLock; lock = RunLock(sys.argv[1]).acquire(); "
                "lock.record_holder(); print('held', flush=True); sys.stdin.read()")
        proc = subprocess.Popen([sys.executable, "-c", code, str(folder)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "held"
        holders.append(proc)

    yield hold
    for proc in holders:
        proc.stdin.close()
        proc.wait()


def test_resume_into_a_linked_checkpoints_folder_is_refused_and_the_users_files_kept(run: Path, tmp_path: Path):
    mine = tmp_path / "mine"
    shutil.move(run / "checkpoints", mine)
    (run / "checkpoints").symlink_to(mine)
    before = files(mine)
    for how in ("resume=auto", "overwrite=true"):  # two more epochs: training would write checkpoints
        line = one_line_error(cli("train", *QUICK, "trainer.max_epochs=3", f"hydra.run.dir={run}", how,
                                  cwd=tmp_path))
        assert f"{run / 'checkpoints'} is a link out of the run directory" in line, line
        assert files(mine) == before and (run / "checkpoints").is_symlink()


def test_a_linked_metrics_csv_is_neither_resumed_into_nor_reported(run: Path, tmp_path: Path):
    mine = tmp_path / "mine.csv"
    shutil.move(run / "csv" / "metrics.csv", mine)
    (run / "csv" / "metrics.csv").symlink_to(mine)
    before = mine.read_bytes()
    line = one_line_error(cli("train", *QUICK, "trainer.max_epochs=3", f"hydra.run.dir={run}", "resume=auto",
                              cwd=tmp_path))
    assert f"{run / 'csv' / 'metrics.csv'} is a link out of the run directory" in line, line
    line = one_line_error(cli("report", f"runs=[{run}]", f"out={tmp_path / 'report'}", cwd=tmp_path))
    assert f"{run / 'csv' / 'metrics.csv'} is a link out of the run directory" in line, line
    assert mine.read_bytes() == before and not (tmp_path / "report").exists()


def test_eval_into_a_live_runs_directory_is_refused_and_leaves_it_whole(finished: Path, run: Path, live,
                                                                         tmp_path: Path):
    live(run)
    before = files(run)
    line = one_line_error(cli("eval", f"ckpt_path={finished}", f"hydra.run.dir={run}", "overwrite=true",
                              cwd=tmp_path))
    assert f"{run} is in use by a live run (pid " in line, line
    assert files(run) == before


def test_export_tokenizer_and_report_into_a_live_runs_directory_are_refused(finished: Path, run: Path, live,
                                                                             tmp_path: Path):
    live(run)
    before = files(run)
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text("some text to train a tokenizer on\n" * 50)
    commands = [("export", f"ckpt_path={finished}", f"export_dir={run}"),
                ("tokenizer", f"data.paths=[{corpus}]", f"hydra.run.dir={run}", "overwrite=true",
                 f"paths.cache_dir={tmp_path / 'cache'}"),
                ("report", f"runs=[{finished}]", f"out={run}")]
    for command in commands:
        line = one_line_error(cli(*command, cwd=tmp_path))
        assert f"{run} is in use by a live run (pid " in line, (command[0], line)
        assert files(run) == before, command[0]


def test_eval_and_export_never_replace_the_run_they_read(run: Path, tmp_path: Path):
    before = files(run)
    line = one_line_error(cli("eval", f"ckpt_path={run}", f"hydra.run.dir={run}", "overwrite=true", cwd=tmp_path))
    assert f"hydra.run.dir={run} is {run}, which this command reads" in line, line
    line = one_line_error(cli("eval", f"ckpt_path={run}", f"hydra.run.dir={tmp_path}", "overwrite=true",
                              cwd=tmp_path))
    assert f"hydra.run.dir={tmp_path} holds {run}, which this command reads" in line, line
    line = one_line_error(cli("eval", f"ckpt_path={run}", f"hydra.run.dir={run / 'checkpoints'}", "overwrite=true",
                              cwd=tmp_path))
    assert f"hydra.run.dir={run / 'checkpoints'} is inside {run}, which this command reads" in line, line
    line = one_line_error(cli("export", f"ckpt_path={run}", f"export_dir={run}", cwd=tmp_path))
    assert f"export_dir={run} is {run}, which this command reads" in line, line
    assert files(run) == before


def sweep_statuses(sweep: Path) -> tuple[list, list, list]:
    """Each job's status in sweep.json, sweep.csv and its run.json."""
    jobs = json.loads((sweep / "sweep.json").read_text())["jobs"]
    with open(sweep / "sweep.csv") as f:
        rows = list(csv.DictReader(f))
    records = [json.loads((Path(job["run_dir"]) / "run.json").read_text())["status"] for job in jobs]
    return [job["status"] for job in jobs], [row["status"] for row in rows], records


def test_a_finished_sweep_resumed_keeps_its_jobs_finished(tmp_path: Path):
    sweep = tmp_path / "sweep"
    command = ("train", *QUICK, "-m", "model.activation=relu,tanh", f"hydra.sweep.dir={sweep}")
    ok(cli(*command, cwd=tmp_path))
    runs = {job: files(sweep / job) for job in ("0", "1")}
    proc = ok(cli(*command, "resume=auto", cwd=tmp_path))
    assert proc.stdout.count("already finished as launched now; nothing to do") == 2, proc.stdout
    assert sweep_statuses(sweep) == (["finished"] * 2,) * 3
    assert {job: files(sweep / job) for job in runs} == runs


def test_each_job_of_a_sweep_keeps_its_w_and_b_files_in_its_own_directory_and_resumes(tmp_path: Path):
    sweep = tmp_path / "sweep"
    ok(cli("train", *QUICK, "logger=wandb", "-m", "model.activation=relu,tanh", f"hydra.sweep.dir={sweep}",
           cwd=tmp_path))
    for job in ("0", "1"):  # W&B's service lived on after job 0: job 1's debug-core.log linked into job 0
        links = [path for path in (sweep / job).rglob("*") if path.is_symlink()]
        assert links and all(path.resolve().is_relative_to(sweep / job) for path in links), links
    ok(cli("train", *QUICK, "logger=wandb", "model.activation=tanh", f"hydra.run.dir={sweep / '1'}", "resume=auto",
           "trainer.max_epochs=2", cwd=tmp_path))


def test_a_changed_grid_is_refused_unless_its_jobs_are_replaced(tmp_path: Path):
    sweep = tmp_path / "sweep"
    ok(cli("train", *QUICK, "-m", "model.activation=relu,tanh", f"hydra.sweep.dir={sweep}", cwd=tmp_path))
    before = files(sweep)
    changed = ("train", *QUICK, "-m", "model.activation=relu,sigmoid", f"hydra.sweep.dir={sweep}")
    line = one_line_error(cli(*changed, "resume=auto", cwd=tmp_path))
    assert "holds a sweep of another grid (job 1 was model.activation=tanh, now model.activation=sigmoid)" in line
    assert files(sweep) == before
    ok(cli(*changed, "overwrite=true", cwd=tmp_path))
    jobs = json.loads((sweep / "sweep.json").read_text())["jobs"]
    assert [job["status"] for job in jobs] == ["finished"] * 2
    assert "model.activation=sigmoid" in jobs[1]["overrides"]
    config = (sweep / "1" / ".hydra" / "config.yaml").read_text()
    assert "activation: sigmoid" in config
