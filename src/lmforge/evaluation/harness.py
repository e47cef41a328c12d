"""Score a language model on lm-evaluation-harness tasks: run lm-eval's `simple_evaluate` with lmforge's
model adapter, and turn its results into a table and `harness/<task>/<metric>` metrics.

Used by `lmforge eval ... harness.tasks=[...]` and by the harness callback during training.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
from pathlib import Path
from typing import Optional, Sequence

from torch import nn

from lmforge.extras import require

PREFIX = "harness"
BOOTSTRAP_ITERS = 1000  # resamples for the stderr of non-mean metrics (perplexities); lm-eval's default: 100000


def evaluate(model: nn.Module, tokenizer, tasks: Sequence[str], include_path=None, limit: Optional[int] = None,
             num_fewshot: Optional[int] = None, batch_size: int = 8, log_samples: bool = False,
             seed: int = 0) -> Optional[dict]:
    """lm-eval's results dict for `tasks` (None on ranks other than 0 under torch.distributed)."""
    require("lm_eval", "eval", "harness evaluation")
    from lm_eval.evaluator import simple_evaluate

    from lmforge.evaluation.harness_lm import LMForgeLM
    from lmforge.evaluation.task_catalog import load_tasks

    built, manager = load_tasks(list(tasks), include_path)
    lm = LMForgeLM(model=model, tokenizer=tokenizer, batch_size=batch_size)
    with quiet(), evaluation_mode(model):
        return simple_evaluate(model=lm, tasks=built, task_manager=manager, limit=limit, num_fewshot=num_fewshot,
                               log_samples=log_samples, bootstrap_iters=BOOTSTRAP_ITERS, random_seed=seed,
                               numpy_random_seed=seed, torch_random_seed=seed, fewshot_random_seed=seed)


@contextlib.contextmanager
def evaluation_mode(model: nn.Module):
    """The model in eval mode (no dropout) while it is scored, as it was afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


class quiet:
    """lm-eval's INFO and WARNING lines (one per task and setting) held back: the table says what ran."""

    def __enter__(self):
        self.logger = logging.getLogger("lm_eval")
        self.level = self.logger.level
        self.logger.setLevel(logging.ERROR)

    def __exit__(self, *exc):
        self.logger.setLevel(self.level)


def split_key(key: str) -> tuple[str, str]:
    """lm-eval's "acc,none" -> ("acc", "none")."""
    metric, _, filter_name = key.partition(",")
    return metric, filter_name or "none"


def metric_name(metric: str, filter_name: str) -> str:
    """The metric's name in lmforge: `acc`, or `exact_match_strict-match` for a named filter."""
    return metric if filter_name == "none" else f"{metric}_{filter_name}"


def rows(results: dict) -> list[tuple[str, str, float, Optional[float]]]:
    """(task, metric, value, stderr or None) of every numeric result, in lm-eval's task order."""
    table = []
    for task, values in (results.get("results") or {}).items():
        for key, value in values.items():
            metric, filter_name = split_key(key)
            if ("," not in key or metric.endswith("_stderr") or not isinstance(value, (int, float))
                    or isinstance(value, bool)):  # "sample_len", "alias": no metric
                continue
            stderr = values.get(f"{metric}_stderr,{filter_name}")
            stderr = float(stderr) if isinstance(stderr, (int, float)) and math.isfinite(stderr) else None
            table.append((task, metric_name(metric, filter_name), float(value), stderr))
    return table


def metrics(results: dict) -> dict[str, float]:
    """`harness/<task>/<metric>` -> value (and `.../<metric>_stderr`), for metrics.json and the loggers."""
    out = {}
    for task, metric, value, stderr in rows(results):
        out[f"{PREFIX}/{task}/{metric}"] = value
        if stderr is not None:
            out[f"{PREFIX}/{task}/{metric}_stderr"] = stderr
    return out


def table(results: dict) -> str:
    """The results as lines: task, metric, value ± stderr."""
    found = rows(results)
    if not found:
        return "harness: no metrics"
    width_task = max(4, *(len(r[0]) for r in found))
    width_metric = max(6, *(len(r[1]) for r in found))
    lines = [f"{'task':<{width_task}}  {'metric':<{width_metric}}  value ± stderr"]
    for task, metric, value, stderr in found:
        spread = f" ± {stderr:.4f}" if stderr is not None else ""
        lines.append(f"{task:<{width_task}}  {metric:<{width_metric}}  {value:.4f}{spread}")
    return "\n".join(lines)


def write_results(results: dict, folder: Path) -> tuple[Path, Optional[Path]]:
    """lm-eval's results JSON (`harness_results.json`, as its CLI writes it, samples apart) and the
    per-example samples (`harness_samples.jsonl`) when they were logged."""
    from lm_eval.utils import handle_non_serializable

    samples = results.get("samples")
    aggregated = {key: value for key, value in results.items() if key != "samples"}
    path = Path(folder) / "harness_results.json"
    path.write_text(json.dumps(aggregated, indent=2, default=handle_non_serializable, ensure_ascii=False))
    if not samples:
        return path, None
    samples_path = Path(folder) / "harness_samples.jsonl"
    with open(samples_path, "w") as f:
        for task, items in samples.items():
            for item in items:
                f.write(json.dumps({"task": task, **item}, default=handle_non_serializable, ensure_ascii=False)
                        + "\n")
    return path, samples_path
