"""Secrets stay out of files: keys from the environment and from overrides appear in no file a run leaves."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import cli, lmforge, metrics, ok

ENV_SECRET = "envsecret-7f3a9c1e5b"  # in the environment under a secret name
WANDB_KEY = "ovrsecret-2d8e4b6a0c"  # passed on the command line, as Hydra sets an environment variable
PASSWORD = "ovrsecret-9a1c3e5f7d"  # the same, lower-case name: `password` is a secret's name too


def leaks(root: Path) -> list[str]:
    """Every file under `root` (binary ones too: checkpoints, W&B's .wandb, TensorBoard events) that
    holds a planted secret."""
    planted = [s.encode() for s in (ENV_SECRET, WANDB_KEY, PASSWORD)]
    return [f"{path}: {secret.decode()}" for path in sorted(root.rglob("*")) if path.is_file()
            for secret in planted if secret in path.read_bytes()]


def secret_launch(tmp_path: Path, *args: str):
    """A tiny MNIST run with the secrets planted: in the environment, as `hydra.job.env_set` overrides,
    and (the environment's one) as a config value; W&B offline and every other file kept in tmp_path."""
    return lmforge("train", "experiment=mnist_mlp", "data.download=false", "print_config=true",
                   f"+hydra.job.env_set.WANDB_API_KEY={WANDB_KEY}", f"+hydra.job.env_set.db_password={PASSWORD}",
                   f"tags=[{ENV_SECRET}]", *args, cwd=tmp_path,
                   env={"MY_SERVICE_TOKEN": ENV_SECRET, "WANDB_MODE": "offline", "HOME": str(tmp_path)},
                   fresh=True)  # a new interpreter: every library finds its home and cache under tmp_path


def test_a_run_with_every_logger_writes_no_secret_anywhere(tmp_path: Path):
    run = tmp_path / "run"
    proc = ok(secret_launch(tmp_path, "debug=limit", "logger=many", f"hydra.run.dir={run}"))
    assert "test/acc" in metrics(run)
    # The loggers wrote what they write (the places a secret could hide) ...
    assert list(run.glob("wandb/offline-run-*/*.wandb")) and list(run.glob("tensorboard/events.*"))
    assert list(run.glob("checkpoints/*.ckpt")) and (run / ".lock").is_file()
    # ... and the command line is kept, masked.
    assert "+hydra.job.env_set.WANDB_API_KEY=***" in json.loads((run / "run.json").read_text())["argv"]
    assert "+hydra.job.env_set.db_password=***" in json.loads((run / ".lock").read_text())["argv"]
    assert leaks(tmp_path) == []
    assert not [s for s in (ENV_SECRET, WANDB_KEY, PASSWORD) if s in proc.stdout + proc.stderr]


@pytest.mark.parametrize("launcher", ["local", "slurm_local"])  # jobs in this process, or each in its own
def test_a_sweep_and_its_report_write_no_secret_anywhere(tmp_path: Path, launcher: str):
    sweep = tmp_path / "sweep"
    ok(secret_launch(tmp_path, "debug=fdr", f"launcher={launcher}", "-m", "seed=1,2", f"hydra.sweep.dir={sweep}"))
    assert all("test/acc" in metrics(sweep / job) for job in ("0", "1"))
    assert (sweep / "multirun.yaml").is_file() and (sweep / "sweep.json").is_file()
    ok(cli("report", f"runs=[{sweep}]", cwd=tmp_path))
    assert (sweep / "report.html").is_file()
    assert leaks(tmp_path) == []
