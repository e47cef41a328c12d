"""Nothing lost: a run killed with `kill -9` at seeded random moments and restarted with
`resume=auto` each time ends bitwise equal to the uninterrupted run, with the same per-step losses
and every step logged exactly once; a corrupt newest checkpoint is skipped."""

from __future__ import annotations

import csv
import json
import os
import random
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from conftest import csv_metric, lmforge, metrics, ok
from conftest import start as started

MLP = ["experiment=mnist_mlp", "data.download=false", "print_config=false", "trainer.max_epochs=10",
       "model.dropout=0.3", "checkpoint.every_n_steps=4", "logger=many", "logger.wandb.mode=offline"]


def pretrain(corpus: Path, cache: Path) -> list[str]:
    return [f"data.paths=[{corpus}]", "tokenizer.vocab_size=300", f"paths.cache_dir={cache}", "print_config=false",
            "model.block_size=64", "model.n_layer=2", "model.n_embd=64", "model.dropout=0.1", "data.val_windows=16",
            "data.batch_size=8", "trainer.max_steps=120",
            "trainer.max_time=null", "trainer.val_check_interval=10", "checkpoint.every_n_steps=3",
            "callbacks=default", "test=false"]


def start(args: list[str], cwd: Path, env: dict | None = None):
    return started(["train", *args], cwd, env, stdout=subprocess.DEVNULL)


def newest_step(run: Path) -> int:
    steps = [int(p.stem.split("-")[1]) for p in (run / "checkpoints").glob("step-*.ckpt")]
    return max(steps, default=-1)


def killed_and_resumed(args: list[str], run: Path, cwd: Path, kills: int, seed: int,
                       max_delay: float = 1.5) -> list[int]:
    """Start, kill -9 after progress plus a seeded random delay, resume=auto; `kills` times, then finish.
    Returns the newest checkpoint step seen at each kill."""
    rng = random.Random(seed)
    seen = []
    for attempt in range(kills):
        proc = start([*args, f"hydra.run.dir={run}", *(["resume=auto"] if attempt else [])], cwd)
        floor = newest_step(run)
        deadline = time.time() + 300
        while newest_step(run) <= floor and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, max_delay))  # anywhere: a step, a validation, a checkpoint write
        if proc.poll() is not None:
            pytest.fail(f"run ended before kill {attempt + 1}: exit {proc.returncode}\n{proc.stderr.read()[-3000:]}")
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        seen.append(newest_step(run))
    ok(lmforge("train", *args, f"hydra.run.dir={run}", "resume=auto", cwd=cwd))
    return seen


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def assert_same_run(a: Path, b: Path, final: str) -> None:
    wa, wb = weights(a / "checkpoints" / final), weights(b / "checkpoints" / final)
    assert wa.keys() == wb.keys()
    different = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert different == [], different[:5]
    for name in ("train/loss", "val/loss"):
        assert csv_metric(a, name) == csv_metric(b, name), name
    steps = [row["step"] for row in csv.DictReader(open(b / "csv" / "metrics.csv")) if row.get("train/loss")]
    assert len(steps) == len(set(steps)), "a step logged twice"


@pytest.mark.slow
def test_pretraining_killed_five_times_ends_bitwise_equal(corpus: Path, tmp_path: Path):
    args = pretrain(corpus, tmp_path / "cache")
    ok(lmforge("train", *args, f"hydra.run.dir={tmp_path / 'straight'}", cwd=tmp_path))
    # 120 steps of ~15 ms with a checkpoint every 3: room for five kills, each within 0.3 s of progress.
    seen = killed_and_resumed(args, tmp_path / "killed", tmp_path, kills=5, seed=1, max_delay=0.3)
    assert len(seen) == 5 and seen == sorted(seen)
    assert_same_run(tmp_path / "straight", tmp_path / "killed", "step-0000120.ckpt")
    info = json.loads((tmp_path / "killed" / "run.json").read_text())
    assert info["status"] == "finished" and info["attempt"] == 6 and info["global_step"] == 120


@pytest.mark.slow
def test_mlp_killed_mid_epoch_keeps_its_shuffle_dropout_and_history(tmp_path: Path):
    ok(lmforge("train", *MLP, f"hydra.run.dir={tmp_path / 'straight'}", cwd=tmp_path))
    # The MLP trains 40 steps in ~0.2 s on a quiet machine: kill within half a second, before it ends.
    killed_and_resumed(MLP, tmp_path / "killed", tmp_path, kills=2, seed=2, max_delay=0.5)
    assert_same_run(tmp_path / "straight", tmp_path / "killed", "last.ckpt")
    assert metrics(tmp_path / "killed")["test/acc"] == metrics(tmp_path / "straight")["test/acc"]
    # TensorBoard: one event stream with each step once; W&B: the same run continued.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    def tb_steps(run: Path) -> list[int]:
        events = EventAccumulator(str(run / "tensorboard"))
        events.Reload()
        return [e.step for e in events.Scalars("train/loss")]

    assert tb_steps(tmp_path / "killed") == tb_steps(tmp_path / "straight")
    killed_wandb = tmp_path / "killed" / "wandb"
    run_ids = {p.name.rsplit("-", 1)[-1] for p in killed_wandb.glob("offline-run-*")}
    assert run_ids == {(killed_wandb / "run_id").read_text().strip()}


@pytest.mark.slow
def test_fine_tuning_killed_and_resumed_is_exact(tiny_hf_lm: Path, review_files: dict, tmp_path: Path):
    args = ["experiment=finetune_classify", f"init_from={tiny_hf_lm}", f"data.train_file={review_files['train']}",
            "data.text_column=review", "data.label_column=sentiment", "trainer.max_epochs=2", "data.batch_size=4",
            "checkpoint.every_n_steps=2", "print_config=false", "data.max_length=32"]
    ok(lmforge("train", *args, f"hydra.run.dir={tmp_path / 'straight'}", cwd=tmp_path))
    killed_and_resumed(args, tmp_path / "killed", tmp_path, kills=2, seed=3)
    assert_same_run(tmp_path / "straight", tmp_path / "killed", "last.ckpt")


def test_a_corrupt_newest_checkpoint_is_skipped_for_the_previous_one(tmp_path: Path):
    run = tmp_path / "run"
    args = [*MLP[:3], "trainer.max_epochs=3", "debug=limit", "checkpoint.every_n_steps=5", "logger=csv"]
    ok(lmforge("train", *args, f"hydra.run.dir={run}", cwd=tmp_path))
    newest = run / "checkpoints" / "step-0000015.ckpt"
    (run / "checkpoints" / "last.ckpt").unlink()
    (run / "checkpoints" / "best.ckpt").unlink()
    newest.write_bytes(newest.read_bytes()[:2000])  # as a full disk or a foreign tool might leave it
    proc = ok(lmforge("train", *args, "trainer.max_epochs=4", f"hydra.run.dir={run}", "resume=auto", cwd=tmp_path))
    output = proc.stdout + proc.stderr  # lmforge logs through Hydra's console handler (stdout)
    assert "skipping" in output and "step-0000015.ckpt" in output
    assert json.loads((run / "run.json").read_text())["resumed_from"].endswith("step-0000010.ckpt")


def test_a_checkpoint_at_an_epochs_last_step_resumes_exactly_twice_over(tmp_path: Path):
    """Checkpoints due at an epoch's last step are taken at the epoch's end: resuming from one taken
    between the two (Lightning 2.6) skips that epoch's validation and leaves the epoch counters one
    apart, so that a second resume of the same run loses an epoch."""
    args = [*MLP[:3], "trainer.max_epochs=4", "model.dropout=0.3", "checkpoint.every_n_steps=40",
            "checkpoint.keep=10", "logger=csv", "test=false"]

    def resume_from(source: Path, step: int, run: Path) -> None:
        shutil.copytree(source, run)
        for path in (run / "checkpoints").iterdir():
            if path.name != f"step-{step:07d}.ckpt":
                path.unlink()
        ok(lmforge("train", *args, f"hydra.run.dir={run}", "resume=auto", cwd=tmp_path))

    ok(lmforge("train", *args, f"hydra.run.dir={tmp_path / 'straight'}", cwd=tmp_path))
    resume_from(tmp_path / "straight", 40, tmp_path / "once")
    resume_from(tmp_path / "once", 80, tmp_path / "twice")
    straight, twice = (weights(tmp_path / run / "checkpoints" / "step-0000160.ckpt") for run in ("straight", "twice"))
    assert [k for k in straight if not torch.equal(straight[k], twice[k])] == []


PAUSE = '''
import os
import threading

import lightning as L


class Pause(L.Callback):
    """Test helper: the first time a batch starts at global step `step` (the steps before it trained,
    logged and checkpointed), write `marker` and stop there until the process is killed."""

    def __init__(self, step: int, marker: str) -> None:
        self.step, self.marker = step, marker

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step and not os.path.exists(self.marker):
            with open(self.marker, "w") as f:
                f.write(str(trainer.global_step))
            threading.Event().wait()
'''


def killed_while_paused(args: list[str], run: Path, cwd: Path, step: int) -> str:
    """Run until it pauses itself at `step` (positive evidence: the marker file), SIGKILL it there, then
    finish it with resume=auto; returns the resumed run's stderr."""
    (cwd / "pause.py").write_text(PAUSE)
    env = {"PYTHONPATH": os.pathsep.join([str(cwd), os.environ.get("PYTHONPATH", "")]), "PYTHONWARNINGS": "default"}
    marker = cwd / "paused"
    proc = start([*args, f"hydra.run.dir={run}", "+callbacks.pause._target_=pause.Pause",
                  f"+callbacks.pause.step={step}", f"+callbacks.pause.marker={marker}"], cwd, env)
    deadline = time.time() + 300
    while not marker.is_file() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    if not marker.is_file():
        proc.kill()
        pytest.fail(f"never paused at step {step}: exit {proc.poll()}\n{proc.stderr.read()[-3000:]}")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return ok(lmforge("train", *args, f"hydra.run.dir={run}", "resume=auto", cwd=cwd, env=env)).stderr


def logged_twice(run: Path) -> dict[str, list[str]]:
    """The steps at which a column of csv/metrics.csv holds more than one value (every step once: none)."""
    rows = list(csv.DictReader(open(run / "csv" / "metrics.csv")))
    twice = {}
    for name in rows[0]:
        steps = [row["step"] for row in rows if row[name] not in ("", None)]
        if name not in ("step", "epoch") and len(steps) != len(set(steps)):
            twice[name] = sorted({step for step in steps if steps.count(step) > 1}, key=int)
    return twice


def tb_steps(run: Path, name: str) -> list[int]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    return [e.step for e in events.Scalars(name)]


@pytest.mark.slow
def test_pretraining_killed_after_a_validation_checkpoint_keeps_every_step_once(corpus: Path, tmp_path: Path):
    """The checkpoint written at a validation holds the training and validation rows of its step; the rows
    the killed attempt logged after it (with tokens/s, which a fresh process measures only after warm-up)
    are of steps the resumed run does again."""
    args = [*pretrain(corpus, tmp_path / "cache"), "trainer.max_steps=30", "checkpoint.every_n_steps=null",
            "checkpoint.every_n_minutes=null", "callbacks=[default,throughput]", "trainer.log_every_n_steps=1",
            "logger=[csv,tensorboard]"]
    ok(lmforge("train", *args, f"hydra.run.dir={tmp_path / 'straight'}", cwd=tmp_path))
    killed = tmp_path / "killed"
    err = killed_while_paused(args, killed, tmp_path, step=23)  # validated and checkpointed at 10 and 20
    assert Path(json.loads((killed / "run.json").read_text())["resumed_from"]).name in ("last.ckpt", "best.ckpt")
    assert "not resumable" not in err
    assert logged_twice(killed) == {}
    assert_same_run(tmp_path / "straight", killed, "last.ckpt")
    assert tb_steps(killed, "train/loss") == tb_steps(tmp_path / "straight", "train/loss") == list(range(30))


def test_mlp_killed_after_an_end_of_epoch_checkpoint_keeps_every_step_once(tmp_path: Path):
    args = [*MLP[:3], "debug=limit", "trainer.max_epochs=4", "model.dropout=0.3", "checkpoint.every_n_steps=5",
            "checkpoint.keep=10", "callbacks=[throughput]", "trainer.log_every_n_steps=1",
            "trainer.check_val_every_n_epoch=2", "logger=[csv,tensorboard]", "test=false"]
    ok(lmforge("train", *args, f"hydra.run.dir={tmp_path / 'straight'}", cwd=tmp_path))
    killed = tmp_path / "killed"
    # Five steps an epoch: the checkpoint of step 15 is written at the end of the third epoch (validated
    # after the second and fourth: the throughput window, restarted by a validation, spans step 15).
    killed_while_paused(args, killed, tmp_path, step=18)
    assert json.loads((killed / "run.json").read_text())["resumed_from"].endswith("step-0000015.ckpt")
    assert logged_twice(killed) == {}
    assert_same_run(tmp_path / "straight", killed, "step-0000020.ckpt")
    assert tb_steps(killed, "train/loss") == tb_steps(tmp_path / "straight", "train/loss") == list(range(20))


def test_resuming_mid_epoch_the_data_position_is_restored_without_warning(tmp_path: Path):
    """The training DataLoader's position is state in the checkpoint: Lightning restores it, and does not
    warn that the loader is not resumable and results may be unreliable; that state is where the data resumes."""
    args = [*MLP[:3], "debug=limit", "model.dropout=0.3", "checkpoint.every_n_steps=7", "checkpoint.keep=10",
            "callbacks=minimal", "logger=csv", "test=false"]
    ok(lmforge("train", *args, f"hydra.run.dir={tmp_path / 'straight'}", cwd=tmp_path))

    def resumed_at_step_7(run: Path, samples: int | None = None) -> subprocess.CompletedProcess:
        shutil.copytree(tmp_path / "straight", run)
        (run / "checkpoints" / "step-0000014.ckpt").unlink()
        info = json.loads((run / "run.json").read_text())  # as a run killed after step 7 leaves it
        (run / "run.json").write_text(json.dumps({**info, "status": "running"}))
        if samples is not None:  # where the checkpoint says the data is
            ckpt = torch.load(run / "checkpoints" / "step-0000007.ckpt", weights_only=True)
            ckpt["loops"]["fit_loop"]["state_dict"]["combined_loader"] = [{"epoch": 1, "samples": samples}]
            torch.save(ckpt, run / "checkpoints" / "step-0000007.ckpt")
        return ok(lmforge("train", *args, f"hydra.run.dir={run}", "resume=auto", cwd=tmp_path,
                          env={"PYTHONWARNINGS": "default"}))

    proc = resumed_at_step_7(tmp_path / "resumed")
    assert "not resumable" not in proc.stderr and "unreliable" not in proc.stderr
    straight = weights(tmp_path / "straight" / "checkpoints" / "step-0000014.ckpt")
    resumed = weights(tmp_path / "resumed" / "checkpoints" / "step-0000014.ckpt")
    assert [k for k in straight if not torch.equal(straight[k], resumed[k])] == []
    saved = torch.load(tmp_path / "straight" / "checkpoints" / "step-0000007.ckpt", weights_only=True)
    assert saved["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [{"epoch": 1, "samples": 2 * 32}]
    # The same checkpoint saying the epoch's first two batches are still to come: they are trained on again.
    resumed_at_step_7(tmp_path / "replayed", samples=0)
    replayed = weights(tmp_path / "replayed" / "checkpoints" / "step-0000014.ckpt")
    assert [k for k in straight if not torch.equal(straight[k], replayed[k])] != []


def test_every_checkpoint_a_resume_could_take_has_its_steps_rows_on_disk(tmp_path: Path):
    """A kill can come at any instant, the moment after a step's checkpoint is written included: Lightning
    logs that step's metrics row later, after on_train_batch_end, and at an epoch's end saves last.ckpt
    after our hook. At every batch's end the newest checkpoint a resume would take must find each of its
    steps' rows in metrics.csv (steps 0 .. N - 1 for global step N, see loggers/csv.py); at the epoch's
    end, before last.ckpt is written, it must be of an earlier step than the one ending."""
    import lightning as L
    from torch.utils.data import DataLoader, TensorDataset

    from lmforge.callbacks.last_checkpoint import LastCheckpoint
    from lmforge.callbacks.periodic_checkpoint import PeriodicCheckpoint
    from lmforge.loggers.csv import HistoryCSVLogger
    from lmforge.runs.checkpoints import checkpoint_files

    class Line(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(2, 1)

        def training_step(self, batch, batch_idx):
            loss = torch.nn.functional.mse_loss(self.layer(batch[0]), batch[1])
            self.log("train/loss", loss)
            return loss

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    class Instant(L.Callback):
        """What a resume would find if the process died here."""
        def __init__(self):
            self.seen, self.at_epoch_end = [], []

        def on_train_batch_end(self, trainer, *args):
            history = tmp_path / "csv" / "metrics.csv"
            rows = {int(r["step"]) for r in csv.DictReader(open(history))} if history.is_file() else set()
            newest = self.newest()
            self.seen.append((trainer.global_step, newest, set(range(newest)) <= rows))

        def on_train_epoch_end(self, trainer, *args):  # Lightning runs last.ckpt's save after this
            self.at_epoch_end.append((trainer.global_step, self.newest()))

        def newest(self) -> int:
            files = [f for f in checkpoint_files(tmp_path / "checkpoints") if f.name.startswith("step-")]
            return max((int(f.stem.split("-")[1]) for f in files), default=0)

    periodic = PeriodicCheckpoint(str(tmp_path / "checkpoints"), every_n_steps=2, every_n_minutes=None)
    last = LastCheckpoint(dirpath=str(tmp_path / "checkpoints"), filename="last", monitor=None,
                          enable_version_counter=False)
    data = DataLoader(TensorDataset(torch.randn(12, 2), torch.randn(12, 1)), batch_size=2)  # 6 steps an epoch
    instant = Instant()
    L.Trainer(max_steps=7, log_every_n_steps=1, limit_val_batches=0, logger=HistoryCSVLogger(str(tmp_path)),
              callbacks=[periodic, instant, last], enable_progress_bar=False, enable_model_summary=False,
              accelerator="cpu").fit(Line(), data)
    assert all(complete for *_, complete in instant.seen), instant.seen
    assert instant.at_epoch_end[0] == (6, 4), instant.at_epoch_end  # step 6's waits for last.ckpt's save
    assert [newest for _, newest, _ in instant.seen] == [0, 0, 2, 2, 4, 4, 6]  # each published a hook later
    assert newest_step(tmp_path) == 6  # and the last one published at the end
