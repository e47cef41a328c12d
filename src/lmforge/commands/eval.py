"""`lmforge eval ckpt_path=<run dir or .ckpt>`: test a finished run; writes metrics.json (and predictions).

`data.*` and `module.*` overrides patch the run's saved config (e.g. `data.test_file=other.csv`);
`trainer.*` and `logger.*` are this command's own. `harness.tasks=[...]` scores a language-model run on
lm-evaluation-harness tasks instead (lmforge/commands/eval_harness.py).
"""

from __future__ import annotations

import os
import sys

from omegaconf import DictConfig

from lmforge.config.validate import validate
from lmforge.job import job_line, output_dir


def main(cfg: DictConfig) -> dict[str, float]:
    # 1. Validate this command's keys; the overlays are checked against the run's own targets below.
    config = validate(cfg, "eval")
    if (config.get("harness") or {}).get("tasks"):  # lm-evaluation-harness tasks instead of the test loop
        from lmforge.commands.eval_harness import run_harness

        return run_harness(config)

    import lightning as L

    from lmforge.config.paths import absolute_paths
    from lmforge.config.tree import render_tree
    from lmforge.distributed import is_main_process
    from lmforge.experiment.build import build_trainer
    from lmforge.experiment.load import load_run
    from lmforge.loggers.wandb import finish_run
    from lmforge.metrics import final_metrics
    from lmforge.runs.directory import RunDir, read_paths
    from lmforge.runs.lock import RunLock
    from lmforge.runs.metadata import run_info

    # 2. Claim the output directory (no live run's, apart from the run read), then build: the run's data
    # and model with its weights, this command's trainer and loggers.
    run = RunDir(output_dir())
    if is_main_process():
        lock = RunLock(run.path).acquire()  # held until this process exits
        run.refuse_unless(resume=False, overwrite=config["overwrite"], resumable=False,
                          reads=read_paths(config["ckpt_path"]))
        lock.record_holder()
    if config["seed"] is not None:
        L.seed_everything(config["seed"], workers=True, verbose=False)
    overlays = {"data": absolute_paths(config["data"], os.getcwd()), "module": config["module"]}
    loaded = load_run(config["ckpt_path"], overrides=overlays, cache_dir=config["paths"]["cache_dir"])
    run_config = {**loaded.config, "trainer": config["trainer"], "logger": config["logger"], "callbacks": {},
                  "paths": config["paths"], "task_name": config["task_name"]}
    if config["print_config"]:
        print(render_tree(run_config, color=sys.stdout.isatty()))
    if is_main_process():
        run.write_config(run_config)
        run.write_info(run_info("eval", run.path, evaluated=str(loaded.checkpoint)))
    trainer = build_trainer(run_config, enable_checkpointing=False)

    # 3. Run the test loop.
    try:
        trainer.test(loaded.module, datamodule=loaded.datamodule)
    finally:
        finish_run()

    # 4. Write metrics.json and the module's own outputs.
    metrics = final_metrics({**trainer.callback_metrics, **loaded.module.test_metrics()})
    if trainer.is_global_zero:
        run.write_metrics(metrics)
        run.finish("finished")
        loaded.module.on_run_end(run.path, loaded.datamodule)
        job_line(f"run directory: {run}")
    return metrics
