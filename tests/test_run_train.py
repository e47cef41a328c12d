"""`lmforge.compose` + `lmforge.run_train`: a training run from Python, with no Hydra job around it."""

from __future__ import annotations

import contextlib
import io
import json
import re
from pathlib import Path

import pytest
import yaml
from hydra.core.hydra_config import HydraConfig

import lmforge
from lmforge.errors import UserError

REPO = Path(__file__).resolve().parents[1]
FEW_STEPS = ["experiment=mnist_mlp", "trainer.max_epochs=1", "trainer.limit_train_batches=4",
             "trainer.limit_val_batches=2", "trainer.limit_test_batches=2", "data.download=false"]


@pytest.fixture
def no_hydra_runtime(monkeypatch):
    """Any read of Hydra's runtime (HydraConfig.get, a ${hydra:...} interpolation) fails the run."""
    def refuse():
        raise AssertionError("HydraConfig.get() called outside a Hydra job")

    monkeypatch.setattr(HydraConfig, "get", staticmethod(refuse))
    # As in a fresh Python session: an in-process CLI test run earlier in this worker leaves Hydra's
    # singleton set.
    monkeypatch.setattr(HydraConfig.instance(), "cfg", None)


def test_run_train_from_python(tmp_path, monkeypatch, no_hydra_runtime):
    monkeypatch.chdir(tmp_path)
    config = lmforge.compose("train", FEW_STEPS)
    assert not HydraConfig.initialized()
    result = lmforge.run_train(config, run_dir="run", overrides=FEW_STEPS)
    assert not HydraConfig.initialized()

    run = tmp_path / "run"
    assert result.run_dir == run
    assert json.loads((run / "metrics.json").read_text()) == result.metrics
    assert {"val/acc", "test/acc", "best/val/acc"} <= set(result.metrics)
    assert result.value == result.metrics["val/acc"]
    assert result.trainer.global_step == 4
    assert type(result.module).__name__ == "ClassifierModule" and result.datamodule.dims["num_classes"] == 10
    assert sorted(p.name for p in (run / "checkpoints").glob("*.ckpt"))  # best and last
    assert json.loads((run / "run.json").read_text())["status"] == "finished"
    saved = yaml.safe_load((run / ".hydra" / "config.yaml").read_text())
    assert saved["paths"]["output_dir"] == str(run) and saved["checkpoint"]["dirpath"] == str(run / "checkpoints")
    assert yaml.safe_load((run / ".hydra" / "overrides.yaml").read_text()) == FEW_STEPS
    assert not (tmp_path / "logs").exists()  # the directory the CLI would have made is left alone

    # Launched again as it was, resume=auto finds it finished: nothing trains, the metrics come back.
    again = lmforge.run_train(lmforge.compose("train", [*FEW_STEPS, "resume=auto"]), run_dir=run,
                              overrides=[*FEW_STEPS, "resume=auto"])
    assert again.trainer is None and again.metrics == result.metrics


def test_run_train_refuses_another_run_directory(tmp_path, monkeypatch, no_hydra_runtime):
    """The run directory rules hold from Python too: a directory holding a run is not trained over."""
    monkeypatch.chdir(tmp_path)
    config = lmforge.compose("train", [*FEW_STEPS, "debug=fdr"])
    lmforge.run_train(config, run_dir="run")
    with pytest.raises(UserError, match="run"):
        lmforge.run_train(config, run_dir="run")


def test_compose_bad_override_is_one_user_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match="experiment"):
        lmforge.compose("train", ["experiment=no_such_experiment"])
    with pytest.raises(UserError, match="max_epoch"):
        lmforge.compose("train", ["experiment=mnist_mlp", "trainer.max_epoch=1"])


def test_readme_from_python_lines_run(tmp_path, monkeypatch):
    """The README's "From Python" lines, run as written (MNIST's download switched off, as test_readme does)."""
    section = (REPO / "README.md").read_text().split("### From Python", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, flags=re.S).group(1)
    offline = code.replace('"debug=fdr"]', '"debug=fdr", "data.download=false"]')
    assert offline != code
    monkeypatch.chdir(tmp_path)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(offline, "README.md", "exec"), {})
    run = tmp_path / "logs" / "from_python"
    assert f" {run}\n" in out.getvalue()
    assert "test/acc" in json.loads((run / "metrics.json").read_text())
