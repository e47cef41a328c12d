"""Real runs of the textbook MLP experiment through the CLI: training, eval, sweeps, resume."""

from __future__ import annotations

import json
import math
import textwrap
from pathlib import Path

import pytest
import torch
import yaml
from hydra.utils import instantiate
from lightning.pytorch.profilers import PassThroughProfiler

from conftest import cli, csv_metric, lmforge, metrics, ok, one_line_error, start
from lmforge.runs.checkpoints import saved_config


def test_mnist_mlp_reaches_95_percent_on_digits(mlp_run: Path):
    result = metrics(mlp_run)
    assert result["test/acc"] >= 0.95
    for name in ("val/acc", "val/loss", "test/loss", "train/loss"):
        assert name in result
    # The run directory's contract (lmforge.runs.directory).
    assert (mlp_run / "checkpoints" / "best.ckpt").is_file()
    assert (mlp_run / "checkpoints" / "last.ckpt").is_file()
    assert (mlp_run / "csv" / "metrics.csv").is_file()
    assert (mlp_run / "config_tree.txt").read_text().strip()
    config = yaml.safe_load((mlp_run / ".hydra" / "config.yaml").read_text())
    assert config["model"]["input_size"] == 64 and config["model"]["num_classes"] == 10
    assert "${" not in (mlp_run / ".hydra" / "config.yaml").read_text()  # resolved
    info = json.loads((mlp_run / "run.json").read_text())
    assert info["status"] == "finished" and info["command"] == "train"
    assert info["versions"]["torch"].startswith("2.13")
    assert "experiment=mnist_mlp" in info["argv"]


def test_eval_of_a_run_directory_reproduces_test_accuracy(mlp_run: Path, tmp_path: Path):
    out = tmp_path / "eval"
    proc = ok(cli("eval", f"ckpt_path={mlp_run}", f"hydra.run.dir={out}", cwd=tmp_path))
    assert proc.stdout.strip().splitlines()[-1] == f"run directory: {out}"
    assert metrics(out)["test/acc"] == pytest.approx(metrics(mlp_run)["test/acc"], abs=1e-6)
    assert json.loads((out / "run.json").read_text())["evaluated"].endswith("best.ckpt")


def test_load_run_from_python_rebuilds_the_model(mlp_run: Path):
    import lmforge

    run = lmforge.load_run(mlp_run)
    run.datamodule.setup("test")
    correct = total = 0
    with torch.no_grad():
        for x, y in run.datamodule.test_dataloader():
            correct += (run.model(x).argmax(-1) == y).sum().item()
            total += len(y)
    assert correct / total == pytest.approx(metrics(mlp_run)["test/acc"], abs=1e-6)


def test_sweep_over_activations_gives_one_run_each_and_every_loss_falls(tmp_path: Path):
    sweep = tmp_path / "sweep"
    ok(lmforge("train", "experiment=mnist_mlp", "-m", "model.activation=relu,sigmoid,tanh,gelu",
               "trainer.max_epochs=3", "data.download=false", "print_config=false",
               f"hydra.sweep.dir={sweep}", cwd=tmp_path))
    runs = sorted(p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit())
    assert len(runs) == 4
    seen = set()
    for run in runs:
        config = yaml.safe_load((run / ".hydra" / "config.yaml").read_text())
        seen.add(config["model"]["activation"])
        val_loss = csv_metric(run, "val/loss")
        assert len(val_loss) == 3 and val_loss[-1] < val_loss[0], (run, val_loss)
        assert "test/acc" in metrics(run)
    assert seen == {"relu", "sigmoid", "tanh", "gelu"}


def test_mse_loss_trains(tmp_path: Path):
    run = tmp_path / "run"
    ok(cli("train", "experiment=mnist_mlp", "module.loss=mse", "model.activation=tanh",
               "trainer.max_epochs=3", "data.download=false", f"hydra.run.dir={run}", cwd=tmp_path))
    val_loss = csv_metric(run, "val/loss")
    assert val_loss[-1] < val_loss[0]
    assert metrics(run)["test/acc"] > 0.5


def test_resume_from_a_run_directory_continues_the_step_count(tmp_path: Path):
    first, second = tmp_path / "first", tmp_path / "second"
    common = ["experiment=mnist_mlp", "data.download=false", "print_config=false", "debug=limit"]
    ok(cli("train", *common, "trainer.max_epochs=2", f"hydra.run.dir={first}", cwd=tmp_path))
    assert json.loads((first / "run.json").read_text())["global_step"] == 10
    ok(cli("train", *common, "trainer.max_epochs=4", f"ckpt_path={first}", f"hydra.run.dir={second}",
               cwd=tmp_path))
    info = json.loads((second / "run.json").read_text())
    assert info["global_step"] == 20 and info["resumed_from"].endswith("last.ckpt")
    # resume=auto in the same directory: continues from its own last.ckpt.
    ok(cli("train", *common, "trainer.max_epochs=5", "resume=auto", f"hydra.run.dir={second}",
               cwd=tmp_path))
    assert json.loads((second / "run.json").read_text())["global_step"] == 25


def test_a_run_that_max_steps_ends_between_validations_validates_and_saves_its_last_step(tmp_path: Path):
    run = tmp_path / "run"  # 5 batches an epoch, validated at each epoch's end: step 7 falls between
    ok(cli("train", "experiment=mnist_mlp", "data.download=false", "print_config=false", "debug=limit",
           "trainer.max_epochs=3", "trainer.max_steps=7", f"hydra.run.dir={run}", cwd=tmp_path))
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 7
    assert len(csv_metric(run, "val/loss")) == 2  # after step 5 and after step 7
    assert json.loads((run / "run.json").read_text())["global_step"] == 7


@pytest.mark.parametrize("mode", ["min", "max"])
def test_last_checkpoint_is_a_link_to_best_only_when_validation_improved(tmp_path: Path, mode: str):
    # The loss falls at each of the 3 validations: monitored with mode=min every one improves (last.ckpt
    # is the best.ckpt just written, one file); with mode=max only the first counts as best.
    run = tmp_path / mode
    ok(cli("train", "experiment=mnist_mlp", "data.download=false", "print_config=false", "debug=limit",
           "monitor=val/loss", f"monitor_mode={mode}", f"hydra.run.dir={run}", cwd=tmp_path))
    best, last = run / "checkpoints" / "best.ckpt", run / "checkpoints" / "last.ckpt"
    steps = [torch.load(f, weights_only=True)["global_step"] for f in (best, last)]
    assert steps == ([15, 15] if mode == "min" else [5, 15])
    assert best.samefile(last) == (mode == "min")
    assert not [f.name for f in (run / "checkpoints").iterdir() if f.name.startswith(".")]  # no temp left


def test_the_profiler_preset_writes_time_per_hook_and_a_default_run_no_profile(mlp_run: Path, tmp_path: Path):
    """The default trainer profiles nothing at no cost per hook (experiment/profiler.py); debug=profiler
    puts Lightning's SimpleProfiler in its place."""
    run = tmp_path / "profiled"
    ok(cli("train", "experiment=mnist_mlp", "data.download=false", "print_config=false", "debug=profiler",
           "trainer.limit_train_batches=5", f"hydra.run.dir={run}", cwd=tmp_path))
    profile = (run / "fit-profile.txt").read_text()
    assert "run_training_batch" in profile and "[Callback]ModelCheckpoint" in profile
    assert not list(mlp_run.glob("*profile*"))
    # What the default run used opens one shared no-op context for every hook, not a new one per call.
    default = instantiate(saved_config(mlp_run)["trainer"]["profiler"])
    assert isinstance(default, PassThroughProfiler) and default.profile("a") is default.profile("b")


def test_fast_dev_run_writes_metrics_and_names_the_run_directory(tmp_path: Path):
    run = tmp_path / "fdr"
    proc = ok(cli("train", "experiment=mnist_mlp", "debug=fdr", f"hydra.run.dir={run}", cwd=tmp_path))
    assert proc.stdout.strip().splitlines()[-1] == f"run directory: {run}"
    assert "test/acc" in metrics(run)


def test_wandb_runs_offline_one_run_per_sweep_job_inside_its_directory(tmp_path: Path):
    sweep = tmp_path / "sweep"
    ok(lmforge("train", "experiment=mnist_mlp", "debug=limit", "logger=wandb", "data.download=false",
               "-m", "seed=1,2", f"hydra.sweep.dir={sweep}", cwd=tmp_path,
               env={"WANDB_MODE": "", "WANDB_API_KEY": "", "HOME": str(tmp_path)}))
    ids = set()
    for job in ("0", "1"):
        offline = list((sweep / job / "wandb").glob("offline-run-*"))
        assert len(offline) == 1 and list(offline[0].glob("*.wandb")), job
        ids.add(offline[0].name.rsplit("-", 1)[-1])
        assert "test/acc" in metrics(sweep / job)
    assert len(ids) == 2  # two distinct W&B runs
    assert not (tmp_path / "wandb").exists()  # nothing written outside the run directories


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_shares_one_run_directory(tmp_path: Path):
    from lmforge.data.vision import DigitsDataModule

    logs = tmp_path / "logs"
    ok(lmforge("train", "experiment=mnist_mlp", "trainer=ddp_cpu", "debug=limit", "trainer.max_epochs=1",
               "trainer.limit_train_batches=1.0", "data.download=false", "print_config=false",
               f"paths.log_dir={logs}", cwd=tmp_path))
    runs = list((logs / "debug" / "runs").iterdir())
    assert len(runs) == 1, runs
    run = runs[0]
    # World size 2: the DistributedSampler gives each rank half the training set, so one epoch takes
    # half the steps of a single process (20 batches of 32 instead of 40); rank 1 ran in this directory.
    n_train = len(DigitsDataModule().splits["train"][1])
    per_rank = math.ceil(n_train / 2)
    assert json.loads((run / "run.json").read_text())["global_step"] == math.ceil(per_rank / 32) == 20
    assert (run / "train_rank_1.log").is_file()
    assert metrics(run)["test/acc"] > 0.5  # chance is 0.1
    assert (run / "checkpoints" / "last.ckpt").is_file()


@pytest.mark.slow
def test_ddp_ranks_save_a_timed_checkpoint_together(tmp_path: Path):
    """Each rank has its own clock: here rank 1's says an hour has passed from the first step on, rank
    0's does not. A checkpoint save is collective, so both save (at the first logged step, 2); one rank
    saving alone deadlocked the run."""
    (tmp_path / "skew.py").write_text(textwrap.dedent("""
        import lightning as L

        class Skew(L.Callback):
            def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
                if trainer.global_rank == 1 and trainer.global_step == 0:
                    periodic = next(c for c in trainer.callbacks if type(c).__name__ == "PeriodicCheckpoint")
                    periodic._last_time -= 3600
    """))
    run = tmp_path / "run"
    ok(lmforge("train", "experiment=mnist_mlp", "trainer=ddp_cpu", "trainer.max_steps=3", "data.download=false",
               "checkpoint.every_n_minutes=30", "+callbacks.skew._target_=skew.Skew", "print_config=false",
               "trainer.log_every_n_steps=2",  # the ranks compare their clocks on the logged steps
               "test=false", f"hydra.run.dir={run}", cwd=tmp_path, env={"PYTHONPATH": str(tmp_path)}, timeout=120))
    assert (run / "checkpoints" / "step-0000002.ckpt").is_file()


@pytest.mark.slow
def test_ddp_ranks_refuse_non_finite_weights_together(tmp_path: Path):
    """Under FSDP each rank checks only its shard before a save; here rank 1 alone holds a NaN weight
    (set just before the save at step 2). Both refuse, so the run ends with the reason (before: rank 0
    only saw its peer die, "check the logs of the remote worker", reported as a bug in lmforge)."""
    (tmp_path / "poison.py").write_text(textwrap.dedent("""
        import lightning as L
        import torch

        class Poison(L.Callback):
            def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
                if trainer.global_rank == 1 and trainer.global_step == 2:
                    with torch.no_grad():
                        next(pl_module.parameters()).fill_(float("nan"))
    """))
    proc = lmforge("train", "experiment=mnist_mlp", "trainer=ddp_cpu", "trainer.max_steps=4", "data.download=false",
                   "checkpoint.every_n_steps=2", "+callbacks.poison._target_=poison.Poison", "print_config=false",
                   "test=false", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path,
                   env={"PYTHONPATH": str(tmp_path)}, timeout=120)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "weights became non-finite (first: in another rank's shard) at step 2" in proc.stderr


def test_corrupt_checkpoint_is_one_line(mlp_run: Path, tmp_path: Path):
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes((mlp_run / "checkpoints" / "last.ckpt").read_bytes()[:500])
    line = one_line_error(cli("eval", f"ckpt_path={bad}", cwd=tmp_path))
    assert str(bad) in line and "corrupt" in line


@pytest.mark.slow
def test_two_nodes_started_by_hand_share_one_run_directory(tmp_path: Path):
    """A 2-node DDP job simulated on one machine (MASTER_ADDR/NODE_RANK, as a cluster launcher sets)."""
    run = tmp_path / "run"
    args = ["train", "experiment=mnist_mlp", "trainer=ddp_cpu", "trainer.devices=1",
            "trainer.num_nodes=2", "debug=limit", "trainer.max_epochs=1", "trainer.limit_train_batches=1.0",
            "data.download=false", "print_config=false", f"hydra.run.dir={run}"]
    nodes = []
    for node_rank in (0, 1):
        env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29571", "NODE_RANK": str(node_rank), "WORLD_SIZE": "2"}
        nodes.append(start(args, tmp_path, env))
    outputs = [node.communicate(timeout=600) for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], outputs
    assert "run directory:" in outputs[0][0] and "run directory:" not in outputs[1][0]
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "finished"
    assert info["global_step"] == 20  # a world of 2: each node trained on half the 1,257 digits (40 steps alone)
    assert metrics(run)["test/acc"] > 0.5  # chance is 0.1
