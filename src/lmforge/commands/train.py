"""`lmforge train`: compose conf/train.yaml + overrides, then validate, claim, build, fit, test, write.

Every experiment (the MLP, pretraining, fine-tuning) goes through this one flow; the work lives in
the library calls it makes (`lmforge.experiment`, `lmforge.runs`, `lmforge.callbacks`).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Optional

from omegaconf import DictConfig

from lmforge.config.paths import absolute_paths
from lmforge.config.validate import validate
from lmforge.errors import Stopped, UserError
from lmforge.job import in_multirun, job_line, output_dir, run_dir_is_fixed


def main(cfg: DictConfig) -> Optional[float]:
    # 1. Validate: every key known, every value well typed, before anything is built.
    config = validate(cfg, "train")
    config["data"] = absolute_paths(config["data"], os.getcwd())  # the saved run means the same files anywhere

    import lightning as L
    from hydra.core.hydra_config import HydraConfig
    from hydra.utils import instantiate

    from lmforge.callbacks.clock import RunClock
    from lmforge.callbacks.final_validation import ValidateLastStep
    from lmforge.callbacks.heap import KeepFreedMemory
    from lmforge.callbacks.monitor_check import CheckMonitors
    from lmforge.callbacks.preemption import EXIT_STATUS, Preemption
    from lmforge.callbacks.run_in_checkpoints import RunInCheckpoints
    from lmforge.callbacks.step_seed import StepSeed
    from lmforge.config.tree import render_tree
    from lmforge.distributed import is_main_process, leave_together, shards_parameters
    from lmforge.experiment.build import (
        build_datamodule,
        build_module,
        build_trainer,
        check_devices,
        check_init_from,
        check_optimizer,
    )
    from lmforge.experiment.load import resolve_init_from
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

    check_optimizer(config)
    check_init_from(config)
    check_devices(config["trainer"])

    # 2. Claim the run directory (rank 0 owns it) and find where training starts.
    run = RunDir(output_dir())
    owner = is_main_process()
    resume = config["resume"] == "auto"
    if resume and not run_dir_is_fixed():
        raise UserError("resume=auto needs a run directory the next launch finds again: add hydra.run.dir=DIR "
                        "(the default directory is new for every launch)")
    devices = None
    if in_multirun() and os.environ.get("LMFORGE_DEVICE_SLOTS"):  # launcher=joblib: one device slot per worker
        from lmforge.sweeps.devices import restrict_devices

        per_job = config["trainer"]["devices"] if isinstance(config["trainer"]["devices"], int) else 1
        devices = restrict_devices(HydraConfig.get().sweep.dir, int(os.environ["LMFORGE_DEVICE_SLOTS"]), per_job)
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
    start_ckpt = read_checkpoint(start, mmap=True) if start else None
    start_step = int(start_ckpt.get("global_step", 0)) if start_ckpt else None

    # 3. Build: init_from resolved once, then data, model + module, callbacks, loggers, trainer.
    if config["seed"] is not None:
        L.seed_everything(config["seed"], workers=True, verbose=False)
    parent = resolve_init_from(config["init_from"], config["paths"]["cache_dir"]) if config["init_from"] else None
    datamodule = build_datamodule(config, tokenizer=parent.tokenizer if parent else None)
    module, config = build_module(config, datamodule, parent.model_dir if parent else None)
    if start_ckpt is not None:
        check_weights_fit(start_ckpt, module, start)
    periodic = instantiate(config["checkpoint"], _convert_="all")
    preemption = Preemption(periodic)
    own: list[Any] = [ValidateLastStep(), RunInCheckpoints(redact(config)), RunClock(), periodic, preemption,
                      KeepFreedMemory(), CheckMonitors.from_config(config)]
    if config["seed"] is not None:
        own.append(StepSeed(config["seed"]))
    trainer = build_trainer(config, callbacks=own, loggers=_loggers(config, start_step))
    if config["nan_policy"] == "skip" and trainer.world_size > 1:  # Lightning refuses a skipped step there
        raise UserError(f"nan_policy=skip works in one process; with {trainer.world_size} (trainer.devices x "
                        "trainer.num_nodes) use nan_policy=stop")
    # The config is printed and the run claimed once everything that checks the input has passed.
    if owner:
        tree = render_tree(redact(config))
        if config["print_config"] and not in_multirun():
            print(render_tree(redact(config), color=sys.stdout.isatty()))
        run.write_config(config, tree)
        run.write_overrides(list(HydraConfig.get().overrides.task))
        if datamodule.tokenizer is not None:
            run.save_tokenizer(datamodule.tokenizer)
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
            logged.update(trainer.callback_metrics)
            if preemption.status:
                status = preemption.status
                raise Stopped(EXIT_STATUS[status], f"{status} at step {trainer.global_step}: saved {preemption.checkpoint.saved}; "
                              f"continue with: lmforge train <same overrides> resume=auto hydra.run.dir={run}")
            best = getattr(trainer.checkpoint_callback, "best_model_score", None)
            if best is not None:
                logged[f"best/{config['monitor']}"] = best
        if config["test"]:
            best_path = getattr(trainer.checkpoint_callback, "best_model_path", "") if config["train"] else ""
            ckpt = best_path or (str(start) if start and not config["train"] else None)
            if ckpt and config["train"] and trainer.world_size > 1 and shards_parameters(config["trainer"].get("strategy")):
                # FSDP left each parameter of the fitted module a flat view of this rank's shard: wrapped again
                # for the test it cannot take the checkpoint's whole tensors, so the test gets a module built anew.
                module, _ = build_module(config, datamodule, parent.model_dir if parent else None)
            trainer.test(module, datamodule=datamodule, ckpt_path=ckpt, weights_only=True)
            logged.update({k: v for k, v in trainer.callback_metrics.items() if k.startswith("test/")})
        value = optimized_value(logged, config["optimized_metric"], required=in_multirun())
        status = "finished"
        leave_together()
    finally:
        if trainer.is_global_zero:
            run.finish(status, global_step=trainer.global_step)
        finish_run()
        if status in EXIT_STATUS:
            preemption.pass_on()  # e.g. submitit requeues the job here

    # 5. Write: metrics.json, the module's own outputs (e.g. predictions.csv), where it all is.
    if trainer.is_global_zero:
        earlier = run.read_metrics() if start and run_dir_of(start) == run.path.resolve() else {}
        run.write_metrics({**earlier, **final_metrics(logged)})  # a resumed run keeps what it measured before
        module.on_run_end(run.path, datamodule)
        if not in_multirun():  # a sweep's jobs announce their directory when they start
            print(f"run directory: {run}")
    return value


def _loggers(config: dict, resume_step: Optional[int]) -> list:
    """The config's loggers; those whose target takes `resume_step` continue their history on resume."""
    import inspect

    from hydra.utils import get_object, instantiate

    loggers = []
    for node in (config.get("logger") or {}).values():
        if not node:
            continue
        takes_step = "resume_step" in inspect.signature(get_object(node["_target_"])).parameters
        loggers.append(instantiate(node, _convert_="all", **({"resume_step": resume_step} if takes_step else {})))
    return loggers


def _attempts(run) -> dict:
    """How many times this run directory was started (1 for a fresh run, +1 per resume)."""
    return {"attempt": int(run.read_info().get("attempt", 0)) + 1}
