"""Lightning's private names that lmforge relies on, each behind one small function or constant."""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator
from unittest import mock

import lightning as L
from lightning.pytorch.callbacks.progress import rich_progress
from lightning.pytorch.strategies.launchers import subprocess_script

DISTRIBUTION = "lightning"
CHECKED = ">=2.6.6,<2.7"

SubprocessScriptLauncher = subprocess_script._SubprocessScriptLauncher
"""The launcher with which DDP starts ranks 1..N-1 as new processes of the same command line."""

HOOK_NAME_ATTRIBUTE = "_current_fx_name"
"""The LightningModule attribute that Lightning sets before and after every hook it calls."""

# Private methods that lmforge's subclasses override, and the module whose code calls each one:
# (Lightning class, method, module calling it).
OVERRIDDEN = (
    ("lightning.pytorch.callbacks.RichProgressBar", "_update_metrics",
     "lightning.pytorch.callbacks.progress.rich_progress"),
    ("lightning.pytorch.callbacks.RichProgressBar", "_get_train_description",
     "lightning.pytorch.callbacks.progress.rich_progress"),
    ("lightning.pytorch.callbacks.ModelCheckpoint", "_save_checkpoint",
     "lightning.pytorch.callbacks.model_checkpoint"),
    ("lightning.pytorch.loggers.csv_logs.ExperimentWriter", "_check_log_dir_exists",
     "lightning.fabric.loggers.csv_logs"),
    ("lightning.pytorch.strategies.DDPStrategy", "_configure_launcher",
     "lightning.pytorch.trainer.connectors.accelerator_connector"),
    ("lightning.pytorch.strategies.launchers.subprocess_script._SubprocessScriptLauncher",
     "_call_children_scripts", "lightning.pytorch.strategies.launchers.subprocess_script"),
)


def validation_follows_batch(trainer: L.Trainer) -> bool:
    """Lightning's own rule for whether a validation runs after the training batch that just ended."""
    loop = trainer.fit_loop
    return loop.epoch_loop._should_check_val_fx(loop._data_fetcher)


def batches_started_this_epoch(trainer: L.Trainer) -> int:
    """Training batches of the current epoch the fit loop has started, as restored on resume."""
    return trainer.fit_loop.epoch_loop.batch_progress.current.ready


def load_training_loader_state(trainer: L.Trainer) -> None:
    """Hand the training DataLoader the state its checkpoint saved (a no-op when not resuming or done)."""
    trainer.fit_loop._load_combined_loader_states()


def run_batch_index(trainer: L.Trainer) -> int:
    """Index of the current training batch counted over the whole run, as restored on resume."""
    return trainer.fit_loop.total_batch_idx


def last_saved(callback: Any) -> tuple[int, str]:
    """(global step, file) of the checkpoint a ModelCheckpoint saved last; (0, "") before any."""
    return callback._last_global_step_saved, callback._last_checkpoint_saved


def set_last_saved(callback: Any, step: int, filepath: str) -> None:
    """Record in a ModelCheckpoint the checkpoint it saved last (as its own save does)."""
    callback._last_global_step_saved = step
    callback._last_checkpoint_saved = filepath


def set_launcher(strategy: Any, launcher: Any) -> None:
    """Replace the launcher a strategy starts its processes with."""
    strategy._launcher = launcher


@contextlib.contextmanager
def child_command(command: Callable[..., Any]) -> Iterator[None]:
    """Within the block, DDP builds a Hydra app's child command lines with `command` (not from sys.argv)."""
    with mock.patch.object(subprocess_script, "_hydra_subprocess_cmd", command):
        yield


def logger_experiment(logger: Any, make: Callable[[], Any]) -> Any:
    """A logger's experiment object, made by `make()` on first use and kept by the logger."""
    if logger._experiment is None:
        logger._experiment = make()
    return logger._experiment


class _PromptRefreshThread(rich_progress._RefreshThread):
    """Lightning's refresh thread of the rich progress bar, waiting on its stop flag between refreshes
    instead of sleeping through the period: every stop of the bar (the end of fit, of each validation,
    of test) joins this thread, and Lightning's sleeps up to a whole second (refresh_rate=1) first."""

    def run(self) -> None:
        while not self.done.wait(1 / self.refresh_per_second):
            if self.refresh_cond:
                with self.live._lock:
                    self.live.refresh()
                self.refresh_cond = False


def stop_rich_progress_promptly() -> None:
    """Rich progress bars built from now on in this process stop at once (see `_PromptRefreshThread`)."""
    rich_progress._RefreshThread = _PromptRefreshThread
