"""lmforge.compat holds every private name of Lightning, Hydra and Optuna that lmforge uses: these tests
fail, naming the library, when the installed version is outside the range compat was checked on, or
when one of those names no longer does what compat expects of it."""

from __future__ import annotations

import ast
import importlib
import inspect
import logging
import re
import threading
from importlib.metadata import version
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra.core.utils import JobReturn, JobStatus
from hydra.utils import get_object
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.strategies.launchers import subprocess_script
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from torch.utils.data import DataLoader, TensorDataset

from lmforge.compat import datatrove as datatrove_compat
from lmforge.compat import hydra as hydra_compat
from lmforge.compat import lightning as lightning_compat
from lmforge.compat import lm_eval as lm_eval_compat
from lmforge.compat import optuna as optuna_compat

COMPAT = [lightning_compat, hydra_compat, optuna_compat, lm_eval_compat, datatrove_compat]
PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
SRC = Path(lightning_compat.__file__).parents[1]


@pytest.mark.parametrize("compat", COMPAT, ids=lambda m: m.DISTRIBUTION)
def test_installed_version_is_one_compat_was_checked_on(compat):
    installed = version(compat.DISTRIBUTION)
    if installed not in SpecifierSet(compat.CHECKED):
        pytest.fail(f"{compat.DISTRIBUTION} {installed} is installed, but lmforge's use of its private names "
                    f"(src/lmforge/compat/{compat.__name__.rsplit('.', 1)[-1]}.py) was checked on "
                    f"{compat.DISTRIBUTION}{compat.CHECKED} only: check each name there, then widen CHECKED "
                    "and the bound in pyproject.toml", pytrace=False)


@pytest.mark.parametrize("compat", COMPAT, ids=lambda m: m.DISTRIBUTION)
def test_pyproject_bounds_the_library_to_the_checked_range(compat):
    # Every requirement line of pyproject.toml (dependencies and extras): `    "name>=x,<y",  # ...`
    lines = re.findall(r'^\s*"([A-Za-z][^"]*)",', PYPROJECT.read_text(), flags=re.M)
    specifiers = {str(Requirement(r).specifier) for r in lines if Requirement(r).name == compat.DISTRIBUTION}
    assert specifiers == {str(SpecifierSet(compat.CHECKED))}, compat.DISTRIBUTION


class Tiny(L.LightningModule):
    """A linear regression on 4 samples: batches of 1, so 4 training batches an epoch."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)
        self.hook_names: list[str] = []

    def training_step(self, batch, batch_idx):
        self.hook_names.append(getattr(self, lightning_compat.HOOK_NAME_ATTRIBUTE))
        x, y = batch
        return torch.nn.functional.mse_loss(self.layer(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val/loss", torch.nn.functional.mse_loss(self.layer(x), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class Record(L.Callback):
    """What compat reads from the fit loop at the end of each training batch."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, bool, int, int]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.seen.append((batch_idx, lightning_compat.validation_follows_batch(trainer),
                          lightning_compat.batches_started_this_epoch(trainer),
                          lightning_compat.run_batch_index(trainer)))


def test_lightning_names_compat_reads_in_a_real_fit(tmp_path):
    data = DataLoader(TensorDataset(torch.randn(4, 2), torch.randn(4, 1)), batch_size=1)
    record, checkpoint = Record(), ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=3, save_top_k=-1)
    module = Tiny()
    trainer = L.Trainer(max_epochs=2, val_check_interval=2, limit_val_batches=1, num_sanity_val_steps=0,
                        logger=False, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[record, checkpoint], default_root_dir=tmp_path, accelerator="cpu")
    trainer.fit(module, data, data)
    lightning_compat.load_training_loader_state(trainer)  # after the fit: nothing left to load, no error
    # Validation after every 2nd batch of an epoch; the counts go on across the two epochs.
    assert record.seen == [(0, False, 1, 0), (1, True, 2, 1), (2, False, 3, 2), (3, True, 4, 3),
                           (0, False, 1, 4), (1, True, 2, 5), (2, False, 3, 6), (3, True, 4, 7)]
    assert set(module.hook_names) == {"training_step"}
    step, path = lightning_compat.last_saved(checkpoint)
    assert step == 6 and Path(path) == tmp_path / "epoch=1-step=6.ckpt" and Path(path).is_file()
    lightning_compat.set_last_saved(checkpoint, 7, str(tmp_path / "x.ckpt"))
    assert lightning_compat.last_saved(checkpoint) == (7, str(tmp_path / "x.ckpt"))


def test_lightning_launcher_logger_and_child_command_hooks(tmp_path):
    strategy = DDPStrategy()
    launcher = object()
    lightning_compat.set_launcher(strategy, launcher)
    assert strategy.launcher is launcher
    assert issubclass(lightning_compat.SubprocessScriptLauncher, subprocess_script._Launcher)

    def command(*args, **kwargs):
        return ["echo"], {}

    with lightning_compat.child_command(command):
        assert subprocess_script._hydra_subprocess_cmd is command
    assert subprocess_script._hydra_subprocess_cmd is not command
    # The launcher builds a Hydra app's child command lines with that function.
    assert "_hydra_subprocess_cmd(" in inspect.getsource(lightning_compat.SubprocessScriptLauncher)

    logger = CSVLogger(tmp_path)
    made = []
    first = lightning_compat.logger_experiment(logger, lambda: made.append(1) or "writer")
    assert first == "writer" and lightning_compat.logger_experiment(logger, lambda: "other") == "writer"
    assert made == [1] and logger.experiment == "writer"


def test_our_rich_progress_bar_stops_without_waiting_out_its_refresh_period(tmp_path):
    from lmforge.callbacks.progress import RichProgressBar

    data = DataLoader(TensorDataset(torch.randn(4, 2), torch.randn(4, 1)), batch_size=1)
    # A refresh every 1000 s: Lightning's own thread would sleep that long before the bar's stop returns.
    trainer = L.Trainer(max_steps=2, limit_val_batches=1, num_sanity_val_steps=0, logger=False,
                        enable_model_summary=False, enable_checkpointing=False, accelerator="cpu",
                        callbacks=[RichProgressBar(refresh_rate=0.001)], default_root_dir=tmp_path)
    fit = threading.Thread(target=trainer.fit, args=(Tiny(), data, data), daemon=True)
    fit.start()
    fit.join(timeout=120)  # no clock is asserted: a bar that waits out its period never ends
    assert not fit.is_alive() and trainer.global_step == 2


@pytest.mark.parametrize("owner,method,caller", lightning_compat.OVERRIDDEN,
                         ids=lambda x: str(x).rsplit(".", 1)[-1])
def test_private_lightning_methods_lmforge_overrides_exist_and_are_called(owner, method, caller):
    assert callable(getattr(get_object(owner), method, None)), f"{owner}.{method} is gone"
    calls = f".{method}(" in inspect.getsource(importlib.import_module(caller))
    assert calls, f"{caller} no longer calls {method}"


def test_hydra_runs_an_app_with_parsed_arguments_and_lets_its_error_through(tmp_path, monkeypatch):
    (tmp_path / "app.yaml").write_text("x: 1\n")
    parser = hydra_compat.args_parser()
    args = parser.parse_args([f"hydra.run.dir={tmp_path / 'run'}", "hydra.output_subdir=null",
                              "hydra/job_logging=none", "hydra/hydra_logging=none", "x=5"])
    seen = []
    hydra_compat.run_hydra(args, parser, lambda cfg: seen.append(cfg.x), str(tmp_path), "app")
    assert seen == [5]

    def fail(cfg):
        raise ValueError("from the app")

    monkeypatch.delenv(hydra_compat.FULL_ERROR, raising=False)
    assert hydra_compat.pass_errors_through() is False
    with pytest.raises(ValueError, match="from the app"):
        hydra_compat.run_hydra(args, parser, fail, str(tmp_path), "app")
    assert hydra_compat.pass_errors_through() is False  # set by lmforge, not asked for by the user


def test_hydra_composes_a_run_once_and_still_takes_a_mode_from_the_command_line(tmp_path, monkeypatch):
    from hydra._internal.hydra import Hydra

    (tmp_path / "app.yaml").write_text("x: 1\n")
    composed = []
    compose = Hydra.compose_config
    monkeypatch.setattr(Hydra, "compose_config", lambda self, *a, **k: composed.append(1) or compose(self, *a, **k))
    parser = hydra_compat.args_parser()
    quiet = ["hydra.output_subdir=null", "hydra/job_logging=none", "hydra/hydra_logging=none"]
    modes = []

    def app(cfg):
        from hydra.core.hydra_config import HydraConfig
        modes.append(HydraConfig.get().mode.name)

    hydra_compat.run_hydra(parser.parse_args([f"hydra.run.dir={tmp_path / 'run'}", *quiet]), parser, app,
                           str(tmp_path), "app")
    assert composed == [1] and modes == ["RUN"]
    hydra_compat.run_hydra(parser.parse_args([f"hydra.sweep.dir={tmp_path / 'sweep'}", "hydra.mode=MULTIRUN",
                                              "x=1,2", *quiet]), parser, app, str(tmp_path), "app")
    assert modes == ["RUN", "MULTIRUN", "MULTIRUN"]
    assert Hydra.get_mode.__qualname__ == "Hydra.get_mode"  # Hydra's own method again


def test_hydra_full_traceback_asked_for_by_the_user(monkeypatch):
    monkeypatch.setenv(hydra_compat.FULL_ERROR, "1")
    monkeypatch.delenv("_LMFORGE_SET_HYDRA_FULL_ERROR", raising=False)
    assert hydra_compat.pass_errors_through() is True


def test_hydra_job_error_and_quiet_locate():
    error = ValueError("bad trial")
    assert hydra_compat.job_error(JobReturn(status=JobStatus.FAILED, _return_value=error)) is error
    assert hydra_compat.locate("os.path.join") is importlib.import_module("os.path").join

    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logging.getLogger("hydra.utils").addHandler(handler)
    try:
        with pytest.raises(ImportError):
            hydra_compat.locate("lmforge.nope.Thing")
    finally:
        logging.getLogger("hydra.utils").removeHandler(handler)
    assert records == []  # the caller words the error; Hydra's own log line would be a second one


def test_hydra_grid_jobs_come_in_the_order_hydra_runs_them():
    assert hydra_compat.grid_jobs(["a=1,2", "b=x,y"]) == [["a=1", "b=x"], ["a=1", "b=y"], ["a=2", "b=x"],
                                                          ["a=2", "b=y"]]


def test_optuna_storage_and_trial_ids():
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study()
    study.ask()
    asked = study.ask()
    frozen = study.get_trials(deepcopy=False)[1]
    assert optuna_compat.trial_id(asked) == optuna_compat.trial_id(frozen)
    assert optuna_compat.storage(study).get_trial(optuna_compat.trial_id(asked)).number == 1
    opened = optuna_compat.open_trial(study, 1)
    opened.report(0.5, step=3)
    assert study.get_trials()[1].intermediate_values == {3: 0.5}
    assert study.get_trials()[0].intermediate_values == {}


def test_lm_eval_reads_a_bundled_task_yaml_and_datatrove_runs_tasks_through_the_overridden_runner():
    from datatrove.executor import LocalPipelineExecutor

    task = next((SRC / "evaluation" / "tasks").glob("*.yaml"))
    config = lm_eval_compat.load_task_yaml(task)
    assert config["task"] == task.stem and config["dataset_path"] == "json"
    runner = inspect.signature(LocalPipelineExecutor._run_for_rank)  # what QuietLocal overrides, same arguments
    assert list(runner.parameters) == list(inspect.signature(datatrove_compat.QuietLocal._run_for_rank).parameters)


def is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def modules_overriding_private_methods() -> list[str]:
    """lmforge modules that import Lightning and define a `_name` method in a class (read, not imported)."""
    found = []
    for path in sorted(SRC.rglob("*.py")):
        tree = ast.parse(path.read_text())
        imports_lightning = any(isinstance(n, (ast.Import, ast.ImportFrom)) and "lightning" in ast.unparse(n)
                                for n in ast.walk(tree))
        private_methods = any(isinstance(f, ast.FunctionDef) and is_private(f.name)
                              for c in ast.walk(tree) if isinstance(c, ast.ClassDef) for f in c.body)
        if imports_lightning and private_methods:
            found.append(".".join(path.relative_to(SRC.parent).with_suffix("").parts))
    return found


def test_every_private_lightning_method_lmforge_overrides_is_listed_in_compat():
    listed = [(get_object(owner), method) for owner, method, _ in lightning_compat.OVERRIDDEN]
    overridden = set()
    for name in modules_overriding_private_methods():
        module = importlib.import_module(name)
        for cls in vars(module).values():
            if not (inspect.isclass(cls) and cls.__module__ == name):
                continue
            for method, value in vars(cls).items():
                if not (is_private(method) and inspect.isfunction(value)):
                    continue
                if any(base.__module__.startswith("lightning") and method in vars(base) for base in cls.__mro__[1:]):
                    overridden.add(method)
                    assert any(issubclass(cls, owner) and m == method for owner, m in listed), \
                        f"{name}.{cls.__name__} overrides Lightning's {method}: list it in compat.OVERRIDDEN"
    assert overridden == {method for _, method in listed}  # the scan sees each listed override
