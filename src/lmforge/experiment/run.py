"""One training run from a validated config: claim the run directory, build, fit, test, write.

`lmforge train` calls `run_train` inside its Hydra job; Python code and tests call it directly (with a
config from `lmforge.compose`): what the CLI learns from Hydra (the run directory, the overrides, the
sweep a job belongs to) are arguments here, so that nothing in a run reads Hydra's runtime.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from lmforge.errors import Stopped, UserError


@dataclass
class Result:
    """What a run leaves: its metrics (as in metrics.json), its directory, the value a sweeper optimizes,
    and the objects it trained (None when `resume=auto` found the run already finished)."""

    metrics: dict[str, float]
    run_dir: Path
    value: Optional[float] = None
    trainer: Any = field(default=None, repr=False)
    module: Any = field(default=None, repr=False)
    datamodule: Any = field(default=None, repr=False)


def run_train(config: dict, run_dir: str | Path, overrides: Sequence[str] = (), sweep_dir: Optional[Path] = None,
              fixed_run_dir: bool = True) -> Result:
    """Train (then test) the experiment of a validated `train` config in `run_dir`.

    `overrides` are recorded in .hydra/overrides.yaml (`resume=auto` compares them to tell a finished run);
    `sweep_dir` is the sweep this run is a job of (None: a single run); `fixed_run_dir` says whether the
    next launch finds `run_dir` again, which `resume=auto` needs (not so for the CLI's timestamped default)."""
    import lightning as L
    from hydra.utils import instantiate

    from lmforge.callbacks.clock import RunClock
    from lmforge.callbacks.data_wait import DataWait
    from lmforge.callbacks.final_validation import ValidateLastStep
    from lmforge.callbacks.heap import KeepFreedMemory
    from lmforge.callbacks.loader_state import RestoreLoaderState
    from lmforge.callbacks.monitor_check import CheckMonitors
    from lmforge.callbacks.peak_memory import PeakMemory
    from lmforge.callbacks.preemption import EXIT_STATUS, Preemption
    from lmforge.callbacks.run_in_checkpoints import RunInCheckpoints
    from lmforge.callbacks.step_seed import StepSeed
    from lmforge.config.compose import relocate
    from lmforge.config.paths import absolute_paths
    from lmforge.config.tree import render_tree
    from lmforge.distributed import is_main_process, leave_together
    from lmforge.experiment.build import (
        build_datamodule,
        build_loggers,
        build_module,
        build_trainer,
        check_devices,
        check_init_from,
        check_nan_policy,
        check_optimizer,
        device_slots,
        module_for_test,
    )
    from lmforge.experiment.load import resolve_init_from
    from lmforge.job import job_line
    from lmforge.loggers.wandb import finish_run
    from lmforge.metrics import final_metrics, optimized_value
    from lmforge.runs.checkpoints import (
        check_weights_fit,
        find_checkpoint,
        newest_valid_checkpoint,
        read_checkpoint,
        run_dir_of,
    )
    from lmforge.runs.directory import RunDir
    from lmforge.runs.lock import RunLock
    from lmforge.runs.metadata import run_info
    from lmforge.runs.redact import redact

    multirun = sweep_dir is not None
    config = relocate(config, run_dir)
    config["data"] = absolute_paths(config["data"], os.getcwd())  # the saved run means the same files anywhere
    check_optimizer(config)
    check_init_from(config)
    check_devices(config["trainer"])

    # 2. Claim the run directory (rank 0 owns it) and find where training starts.
    run = RunDir(Path(run_dir).absolute())
    owner = is_main_process()
    resume = config["resume"] == "auto"
    if resume and not fixed_run_dir:
        raise UserError("resume=auto needs a run directory the next launch finds again: add hydra.run.dir=DIR "
                        "(the default directory is new for every launch)")
    devices = device_slots(config, sweep_dir)  # launcher=joblib: one device slot per worker
    if owner:
        lock = RunLock(run.path).acquire()  # held until this process exits, even when it is killed
        run.refuse_unless(resume=resume, overwrite=config["overwrite"])
        lock.record_holder()
    start: Optional[Path] = None
    if config["ckpt_path"]:
        start = find_checkpoint(config["ckpt_path"], prefer=("last.ckpt", "best.ckpt"))
    elif resume:
        start = newest_valid_checkpoint(run.path)
        if start is None:
            job_line(f"resume=auto: no checkpoint in {run} yet, starting from scratch")
    done = run.finished_as(overrides) if resume and start else None
    if done is not None:  # e.g. a finished job of a sweep launched again to finish the others
        job_line(f"resume=auto: {run} already finished as launched now; nothing to do (overwrite=true runs it anew)")
        return Result(done, run.path, optimized_value(done, config["optimized_metric"], required=multirun))
    start_ckpt = read_checkpoint(start, mmap=True) if start else None
    start_step = int(start_ckpt.get("global_step", 0)) if start_ckpt else None

    # 3. Build: init_from resolved once, then data, model + module, callbacks, loggers, trainer.
    if config["seed"] is not None:
        L.seed_everything(config["seed"], workers=True, verbose=False)
    parent = resolve_init_from(config["init_from"], config["paths"]["cache_dir"]) if config["init_from"] else None
    datamodule = build_datamodule(config, tokenizer=parent.tokenizer if parent else None,
                                  processor=parent.processor if parent else None)
    module, config = build_module(config, datamodule, parent.model_dir if parent else None)
    if start_ckpt is not None:
        check_weights_fit(start_ckpt, module, start)
    periodic = instantiate(config["checkpoint"], _convert_="all")
    preemption = Preemption(periodic)
    # lmforge's own callbacks, whatever `callbacks=` picks (conf/callbacks/minimal.yaml lists them for users).
    own: list[Any] = [ValidateLastStep(), RunInCheckpoints(redact(config)), RunClock(), PeakMemory(), periodic,
                      preemption, KeepFreedMemory(), RestoreLoaderState(), CheckMonitors.from_config(config),
                      DataWait()]  # last: the other callbacks' work at a batch's end counts as the step's
    if config["seed"] is not None:
        own.append(StepSeed(config["seed"]))
    trainer = build_trainer(config, callbacks=own, loggers=build_loggers(config, start_step))
    check_nan_policy(config, trainer.world_size)
    # The config is printed and the run claimed once everything that checks the input has passed.
    if owner:
        tree = render_tree(redact(config))
        if config["print_config"] and not multirun:
            print(render_tree(redact(config), color=sys.stdout.isatty()))
        run.write_config(config, tree)
        run.write_overrides(list(overrides))
        if datamodule.tokenizer is not None:
            run.save_tokenizer(datamodule.tokenizer)
        if datamodule.processor is not None:
            run.save_processor(datamodule.processor)
        run.write_info(run_info("train", run.path, resumed_from=str(start) if start else None,
                                parent=parent.lineage() if parent else None, visible_devices=devices,
                                **_attempts(run)))
    for logger in trainer.loggers:
        logger.log_hyperparams(redact(config))

    # 4. Run: fit, then test the best checkpoint. A signal stops at a step boundary after a checkpoint.
    logged: dict[str, Any] = {}
    status = "failed"
    try:
        if config["train"]:
            trainer.fit(module, datamodule=datamodule, ckpt_path=str(start) if start else None, weights_only=True)
            if (late := preemption.unhandled()) is not None:  # after the last step: nothing left to stop at
                raise late
            logged.update(trainer.callback_metrics)
            if preemption.status:
                status = preemption.status
                raise Stopped(EXIT_STATUS[status], f"{status} at step {trainer.global_step}: saved {preemption.checkpoint.saved}; "
                              f"continue with: lmforge train <same overrides> resume=auto hydra.run.dir={run}")
            # getattr: None without checkpoints
            best = getattr(trainer.checkpoint_callback, "best_model_score", None)
            if best is not None:
                logged[f"best/{config['monitor']}"] = best
        if config["test"]:
            # getattr: None without checkpoints
            best_path = getattr(trainer.checkpoint_callback, "best_model_path", "") if config["train"] else ""
            ckpt = best_path or (str(start) if start and not config["train"] else None)
            if ckpt and config["train"]:
                module = module_for_test(config, module, trainer, datamodule, parent.model_dir if parent else None)
            trainer.test(module, datamodule=datamodule, ckpt_path=ckpt, weights_only=True)
            logged.update({k: v for k, v in trainer.callback_metrics.items() if k.startswith("test/")})
            logged.update(module.test_metrics())  # per-class scores
        value = optimized_value(logged, config["optimized_metric"], required=multirun)
        status = "finished"
        leave_together()
    finally:
        if trainer.is_global_zero:
            run.finish(status, global_step=trainer.global_step)
        finish_run()
        if status in EXIT_STATUS:
            preemption.pass_on()  # e.g. submitit requeues the job here

    # 5. Write: metrics.json, the module's own outputs (e.g. predictions.csv), where it all is.
    metrics = final_metrics(logged)
    if trainer.is_global_zero:
        earlier = run.read_metrics() if start and run_dir_of(start) == run.path.resolve() else {}
        metrics = {**earlier, **metrics}  # a resumed run keeps what it measured before
        run.write_metrics(metrics)
        module.on_run_end(run.path, datamodule)
        if not multirun:  # a sweep's jobs announce their directory when they start
            print(f"run directory: {run}")
    return Result(metrics, run.path, value, trainer, module, datamodule)


def _attempts(run) -> dict:
    """How many times this run directory was started (1 for a fresh run, +1 per resume)."""
    return {"attempt": int(run.read_info().get("attempt", 0)) + 1}
