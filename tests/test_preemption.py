"""Preemption and Ctrl-C stop at a step boundary with a checkpoint and a status; run directories are
protected from a second run; a NaN loss stops the run naming its step (or the batch is skipped)."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from conftest import (
    STDLIB,
    cli,
    csv_metric,
    is_stopped,
    lmforge,
    metrics,
    ok,
    one_line_error,
)
from conftest import start as started
from lmforge.tokenizers.build import TRAINING_THREAD

LONG_MLP = ["experiment=mnist_mlp", "data.download=false", "print_config=false", "trainer.max_epochs=200",
            "callbacks=minimal", "logger=csv"]


def start(args: list[str], cwd: Path, command: str = "train", group: bool = False, **env: str) -> subprocess.Popen:
    """`lmforge ARGS` started in `cwd`; `group`: in a process group of its own, as a terminal's Ctrl-C
    reaches a command and its children (os.killpg)."""
    return started([command, *args], cwd, env, new_session=group)


def wait_until(condition, proc: subprocess.Popen, what: str) -> None:
    """Until `condition()` holds: positive evidence that the work to be signalled is under way."""
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if condition():
            return
        time.sleep(0.05)
    pytest.fail(f"never reached {what}: exit {proc.poll()}\n{proc.communicate()[1][-3000:]}")


def wait_for_training(run: Path, proc: subprocess.Popen, steps: int = 20) -> None:
    """Until the run has logged `steps` training steps (so it is inside the fit loop)."""
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        info = run / "run.json"
        if info.is_file() and (run / "csv" / "metrics.csv").is_file() and len(csv_metric(run, "train/loss")) >= 1:
            return
        time.sleep(0.1)
    pytest.fail(f"never trained: exit {proc.poll()}\n{proc.communicate()[1][-3000:]}")


@pytest.mark.parametrize("signum, status, code", [(signal.SIGTERM, "preempted", 143),
                                                  (signal.SIGUSR1, "preempted", 143),
                                                  (signal.SIGINT, "interrupted", 130)])
def test_a_signal_saves_a_checkpoint_and_exits_with_its_status(signum, status, code, tmp_path: Path):
    run = tmp_path / "run"
    proc = start([*LONG_MLP, f"hydra.run.dir={run}", "trainer.log_every_n_steps=1"], tmp_path)
    wait_for_training(run, proc)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err[-3000:]
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == status
    saved = run / "checkpoints" / f"step-{info['global_step']:07d}.ckpt"
    assert saved.is_file(), list((run / "checkpoints").iterdir())
    last_line = err.strip().splitlines()[-1]
    assert last_line.startswith(f"{status} at step {info['global_step']}") and "resume=auto" in last_line
    assert "Traceback" not in err


def test_a_run_preempted_mid_epoch_with_the_default_callbacks_resumes_the_rest_of_that_epoch(tmp_path: Path):
    # The default callbacks save last.ckpt (and best.ckpt) when an epoch ends, also one the signal cut short.
    run = tmp_path / "run"
    args = [*LONG_MLP[:3], "trainer.max_epochs=3", "callbacks=default", "logger=csv", "trainer.log_every_n_steps=1",
            f"hydra.run.dir={run}"]
    proc = start(args, tmp_path)
    wait_for_training(run, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-3000:]
    stopped_at = json.loads((run / "run.json").read_text())["global_step"]
    ok(lmforge("train", *args, "resume=auto", cwd=tmp_path))
    with open(run / "csv" / "metrics.csv", newline="") as f:
        rows = [row for row in csv.DictReader(f) if row.get("train/loss")]
    per_epoch = len({row["step"] for row in rows if row["epoch"] == "2"})
    assert 0 < stopped_at < per_epoch  # the signal came inside the first epoch
    assert json.loads((run / "run.json").read_text())["global_step"] == 3 * per_epoch
    assert sorted(int(row["step"]) for row in rows) == list(range(3 * per_epoch))  # each step trained once
    with open(run / "csv" / "metrics.csv", newline="") as f:
        validated = [int(row["epoch"]) for row in csv.DictReader(f) if row.get("val/loss")]
    assert validated == [0, 1, 2]  # each epoch validated once: the cut one when it really ended
    reference = tmp_path / "reference"  # the same run, never stopped: the same weights, bit for bit
    ok(lmforge("train", *args[:-1], f"hydra.run.dir={reference}", cwd=tmp_path))
    weights = [torch.load(r / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"] for r in (run, reference)]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


@pytest.mark.slow
def test_under_ddp_a_signal_to_one_rank_stops_both_together(tmp_path: Path):
    run = tmp_path / "run"
    proc = start([*LONG_MLP, "trainer=ddp_cpu", f"hydra.run.dir={run}", "trainer.log_every_n_steps=1"], tmp_path)
    wait_for_training(run, proc)
    proc.send_signal(signal.SIGTERM)  # rank 0 only: rank 1 is its child process
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 143, err[-3000:]
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "preempted"
    assert (run / "checkpoints" / f"step-{info['global_step']:07d}.ckpt").is_file()
    # ...and it resumes under DDP from that checkpoint to the end.
    resumed = start([*LONG_MLP[:-3], "trainer.max_epochs=1", "callbacks=minimal", "logger=csv", "trainer=ddp_cpu",
                     f"hydra.run.dir={run}", "resume=auto", "trainer.max_steps=" + str(info["global_step"] + 5)],
                    tmp_path)
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err[-3000:]
    assert json.loads((run / "run.json").read_text())["global_step"] == info["global_step"] + 5


def frozen_while(proc: subprocess.Popen, condition) -> None:
    """Stop `proc` (SIGSTOP) at a moment `condition()` holds, and leave it stopped: what is then sent
    reaches it at that point of its work, however busy the machine."""
    while True:
        wait_until(condition, proc, "the work to be signalled")
        proc.send_signal(signal.SIGSTOP)
        wait_until(lambda: is_stopped(proc.pid), proc, "a stopped process")
        if condition():
            return
        proc.send_signal(signal.SIGCONT)


def thread_names(pid: int) -> set[str]:
    """The OS names of the threads of process `pid`."""
    names = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            names.add((task / "comm").read_text().strip())
        except OSError:
            pass  # ended meanwhile
    return names


@pytest.mark.parametrize("signum, status, code", [(signal.SIGINT, "interrupted", 130),
                                                  (signal.SIGTERM, "preempted", 143)])
def test_a_signal_while_a_tokenizer_trains_stops_at_once_and_leaves_nothing(signum, status, code, tmp_path: Path):
    """BPE training runs in Rust, where Python would see a signal only once the whole training is done."""
    corpus = tmp_path / "corpus.txt"
    with open(corpus, "w") as out:  # ~16 MB: read in a blink, then seconds of merges
        for source in sorted(STDLIB.glob("**/*.py")):
            if out.tell() > 16e6:
                break
            out.write(source.read_text(errors="replace"))
    proc = start(["data.paths=[corpus.txt]", "tokenizer.vocab_size=4096", "tokenizer.path=tok"], tmp_path,
                 command="tokenizer", LMFORGE_CACHE_DIR=str(tmp_path / "cache"))
    frozen_while(proc, lambda: TRAINING_THREAD in thread_names(proc.pid))  # the BPE training thread is running
    proc.send_signal(signum)
    proc.send_signal(signal.SIGCONT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err[-3000:]
    assert err.strip() == (f"{status} while training the BPE tokenizer (nothing was saved; the next launch "
                           "trains it anew)")
    assert not (tmp_path / "tok").exists()
    assert not list(tmp_path.glob("logs/tokenizer/runs/*"))  # its run directory held nothing: removed


# Written beside each test that needs them (PYTHONPATH): work that lasts until a signal stops it.
SIGNALLED = '''
import itertools, os, pathlib, time
import lightning as L
import torch
from torch.utils.data import DataLoader, IterableDataset
from lmforge.data.vision import DigitsDataModule


class StuckStarting(DigitsDataModule):
    """A start-up that never ends: says it began (a file named after its process), then waits."""
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        pathlib.Path(f"starting-{os.getpid()}").touch()
        while True:
            time.sleep(0.05)


class Cycle(IterableDataset):
    def __init__(self, x, y):
        self.x, self.y = torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y)

    def __iter__(self):
        for i in itertools.cycle(range(len(self.y))):
            yield self.x[i], self.y[i]


class EndlessDigits(DigitsDataModule):
    """The bundled digits cycled forever: the first epoch (and the run) ends only when stopped."""
    def train_dataloader(self):
        return DataLoader(Cycle(*self.splits["train"]), batch_size=32)


class HoldAtFitEnd(L.Callback):
    """Once training stopped: says so (a file), then waits for the test's `go` file."""
    def on_fit_end(self, trainer, pl_module):
        pathlib.Path("stopping").touch()
        while not pathlib.Path("go").exists():
            time.sleep(0.05)
'''
ENDLESS = ["experiment=mnist_mlp", "data=digits", "data._target_=signalled.EndlessDigits", "print_config=false",
           "trainer.max_epochs=1", "callbacks=minimal", "logger=csv", "trainer.log_every_n_steps=1"]


def signalled(folder: Path) -> dict[str, str]:
    """Write SIGNALLED into `folder`; the environment that imports it (lmforge's own path kept)."""
    (folder / "signalled.py").write_text(SIGNALLED)
    return {"PYTHONPATH": os.pathsep.join([str(folder), *filter(None, [os.environ.get("PYTHONPATH")])])}


def test_sigterm_during_start_up_is_one_line_and_leaves_no_run_directory(tmp_path: Path):
    proc = start(["experiment=mnist_mlp", "data=digits", "data._target_=signalled.StuckStarting",
                  "print_config=false"], tmp_path, **signalled(tmp_path))
    wait_until(lambda: list(tmp_path.glob("starting-*")), proc, "start-up")
    runs = list(tmp_path.glob("logs/mnist_mlp/runs/*"))
    assert len(runs) == 1 and (runs[0] / ".lock").is_file()  # its run directory is claimed: then the signal
    proc.send_signal(signal.SIGTERM)
    proc.send_signal(signal.SIGTERM)  # a repeated one changes nothing
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-3000:]
    assert err.strip().splitlines()[-1] == "preempted by SIGTERM" and "Traceback" not in err
    assert not runs[0].exists()  # new for this launch and left empty: removed


def test_a_second_ctrl_c_while_the_first_one_stops_the_run_changes_nothing(tmp_path: Path):
    run = tmp_path / "run"
    proc = start([*ENDLESS, f"hydra.run.dir={run}", "+callbacks.hold._target_=signalled.HoldAtFitEnd"], tmp_path,
                 **signalled(tmp_path))
    wait_for_training(run, proc)
    proc.send_signal(signal.SIGINT)
    wait_until(lambda: (tmp_path / "stopping").exists(), proc, "the stop")  # a checkpoint saved, fit ending
    proc.send_signal(signal.SIGINT)
    (tmp_path / "go").touch()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "interrupted" and info["error"].startswith("interrupted at step")
    assert err.strip().splitlines()[-1].startswith(f"interrupted at step {info['global_step']}: saved ")
    assert "Traceback" not in err


def sweep_rows(sweep: Path) -> list[dict]:
    with open(sweep / "sweep.csv") as f:
        return list(csv.DictReader(f))


def test_ctrl_c_to_a_joblib_sweep_leaves_no_job_running(tmp_path: Path):
    sweep = tmp_path / "sweep"
    proc = start([*ENDLESS, "-m", "launcher=joblib", "seed=1,2", f"hydra.sweep.dir={sweep}"], tmp_path, group=True,
                 **signalled(tmp_path))
    wait_until(lambda: all((sweep / job / "csv" / "metrics.csv").is_file() and csv_metric(sweep / job, "train/loss")
                           for job in ("0", "1")), proc, "both jobs training")
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: the sweep and its worker processes
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 130, err[-3000:]
    assert [row["status"] for row in sweep_rows(sweep)] == ["interrupted", "interrupted"]
    assert [job["status"] for job in json.loads((sweep / "sweep.json").read_text())["jobs"]] == ["interrupted"] * 2
    for job in ("0", "1"):
        assert json.loads((sweep / job / "run.json").read_text())["status"] == "interrupted"
    assert "Traceback" not in err


def test_sigterm_during_an_optuna_trial_leaves_no_row_running_once_the_study_completes(tmp_path: Path):
    sweep = tmp_path / "sweep"
    args = [*ENDLESS, "hparams_search=optuna_mlp", "-m", "hydra.sweeper.n_trials=1", f"hydra.sweep.dir={sweep}"]
    proc = start(args, tmp_path, **signalled(tmp_path))
    wait_for_training(sweep / "0", proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-3000:]
    assert [row["status"] for row in sweep_rows(sweep)] == ["preempted"]
    # The same study again, each epoch cut short: the cut-off trial is re-run and the study completes.
    again = lmforge("train", *args, "trainer.limit_train_batches=3", "trainer.limit_val_batches=2",
                    "trainer.limit_test_batches=2", cwd=tmp_path, env=signalled(tmp_path))
    assert again.returncode == 0, again.stderr[-3000:]
    assert [row["status"] for row in sweep_rows(sweep)] == ["preempted", "finished"]


def test_a_finished_run_is_not_overwritten(mlp_run: Path, tmp_path: Path):
    before = {p: p.stat().st_mtime_ns for p in mlp_run.rglob("*") if p.is_file()}
    line = one_line_error(cli("train", "experiment=mnist_mlp", "debug=fdr", f"hydra.run.dir={mlp_run}", cwd=tmp_path))
    assert "already holds a run" in line and "resume=auto" in line and "overwrite=true" in line
    assert {p: p.stat().st_mtime_ns for p in mlp_run.rglob("*") if p.is_file()} == before


def test_overwrite_true_replaces_a_run(tmp_path: Path):
    run = tmp_path / "run"
    args = ["experiment=mnist_mlp", "debug=fdr", "data.download=false", f"hydra.run.dir={run}"]
    assert cli("train", *args, cwd=tmp_path).returncode == 0
    (run / "notes.txt").write_text("mine")
    first = json.loads((run / "run.json").read_text())["start_time"]
    assert cli("train", *args, "overwrite=true", cwd=tmp_path).returncode == 0
    assert json.loads((run / "run.json").read_text())["start_time"] > first
    assert (run / "notes.txt").read_text() == "mine"  # only the run's own files are replaced


def test_a_second_live_run_in_one_directory_is_refused_and_a_stale_lock_is_not(tmp_path: Path):
    run = tmp_path / "run"
    first = start([*LONG_MLP, f"hydra.run.dir={run}"], tmp_path)
    wait_for_training(run, first)
    # (One step: were the directory not locked, this run would end at once, not train 200 epochs beside the other.)
    line = one_line_error(lmforge("train", *LONG_MLP, f"hydra.run.dir={run}", "resume=auto", "trainer.max_steps=1",
                                  cwd=tmp_path))
    assert "in use by a live run" in line and f"pid {first.pid}" in line
    first.send_signal(signal.SIGKILL)
    first.wait()
    # The killed run's lock file is still there, its lock is not: resume=auto continues the run.
    assert (run / ".lock").is_file()
    done = lmforge("train", *LONG_MLP[:3], "trainer.max_epochs=1", "callbacks=minimal", "logger=csv",
                   f"hydra.run.dir={run}", "resume=auto", "trainer.max_steps=1", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]


def test_resume_auto_needs_a_fixed_run_directory(tmp_path: Path):
    line = one_line_error(cli("train", "experiment=mnist_mlp", "resume=auto", cwd=tmp_path))
    assert "resume=auto needs a run directory" in line and "hydra.run.dir" in line


NAN_DATA = '''
import torch
from torch.utils.data import DataLoader, TensorDataset
from lmforge.data.vision import DigitsDataModule

class PoisonedDigits(DigitsDataModule):
    """The bundled digits with NaN inputs in every 7th training batch."""
    def train_dataloader(self):
        x, y = self.splits["train"]
        x = torch.as_tensor(x[:320], dtype=torch.float32).clone()
        x[6 * 32:7 * 32] = float("nan")
        return DataLoader(TensorDataset(x, torch.as_tensor(y[:320])), batch_size=32)
'''


@pytest.mark.parametrize("policy", ["stop", "skip"])
def test_a_nan_loss_stops_naming_the_step_or_skips_the_batch(policy: str, tmp_path: Path):
    (tmp_path / "poisoned.py").write_text(NAN_DATA)
    run = tmp_path / "run"
    proc = lmforge("train", "experiment=mnist_mlp", "data=digits", "data._target_=poisoned.PoisonedDigits", "trainer.max_epochs=2",
                   "callbacks=default", f"nan_policy={policy}", f"hydra.run.dir={run}", "print_config=false",
                   cwd=tmp_path, env={"PYTHONPATH": str(tmp_path)})
    if policy == "stop":
        assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "train/loss is nan at step 6" in errors[0]
        info = json.loads((run / "run.json").read_text())
        assert info["status"] == "failed" and "train/loss is nan at step 6" in info["error"]  # why, for the report
    else:
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert csv_metric(run, "train/skipped_batches")[-1] == 2.0  # one poisoned batch per epoch
        # Lightning still counts the step of a skipped batch; the optimizer left the weights alone.
        assert json.loads((run / "run.json").read_text())["global_step"] == 20
        assert metrics(run)["test/acc"] > 0.5
