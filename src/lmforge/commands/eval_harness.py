"""`lmforge eval ckpt_path=<run> harness.tasks=[...]`: score a language-model run on lm-evaluation-harness
tasks (no export step); prints a table, writes lm-eval's results JSON and metrics.json
(`harness/<task>/<metric>`) in this command's run directory."""

from __future__ import annotations

import sys

from lmforge.job import job_line, output_dir


def run_harness(config: dict) -> dict[str, float]:
    import torch

    from lmforge.evaluation import harness
    from lmforge.experiment.load import load_model
    from lmforge.runs.directory import RunDir, read_paths
    from lmforge.runs.lock import RunLock
    from lmforge.runs.metadata import run_info

    settings = config["harness"]
    run = RunDir(output_dir())
    lock = RunLock(run.path).acquire()  # held until this process exits
    run.refuse_unless(resume=False, overwrite=config["overwrite"], resumable=False,
                      reads=read_paths(config["ckpt_path"]))
    lock.record_holder()
    if config["print_config"]:
        from lmforge.config.tree import render_tree

        print(render_tree(config, color=sys.stdout.isatty()))
    model, tokenizer, _ = load_model(config["ckpt_path"], causal=True, cache_dir=config["paths"]["cache_dir"])
    device = settings["device"] or ("cuda" if torch.cuda.is_available() else "cpu")
    model = model.to(device)
    run.write_config({key: value for key, value in config.items() if key not in ("data", "module")})
    run.write_info(run_info("eval", run.path, evaluated=str(config["ckpt_path"])))
    results = harness.evaluate(model, tokenizer, settings["tasks"], include_path=settings["include_path"],
                               limit=settings["limit"], num_fewshot=settings["num_fewshot"],
                               batch_size=settings["batch_size"], log_samples=settings["log_samples"],
                               seed=config["seed"] or 0)
    print(harness.table(results))
    results_path, _ = harness.write_results(results, run.path)
    metrics = harness.metrics(results)
    run.write_metrics(metrics)
    run.finish("finished")
    job_line(f"lm-eval results: {results_path}")
    job_line(f"run directory: {run}")
    return metrics
