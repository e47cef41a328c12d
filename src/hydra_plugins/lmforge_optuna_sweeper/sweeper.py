"""A Hydra sweeper over Optuna's ask/tell API: ask trials, hand them to the launcher, tell the results.

Each job is numbered after its trial (`hydra.job.num` = trial number, so its directory is
`<sweep dir>/<trial number>` with lmforge's default `hydra.sweep.subdir`; with k `seeds_per_trial`,
trial t's jobs are t*k ... t*k+k-1), which keeps job directories apart between processes sharing a
study and between a run and its continuation. A job that fails, returns nothing or returns a
non-finite value is a FAIL trial; the sweep goes on. A job that pruned itself
(lmforge.callbacks.optuna_pruning) has already marked its trial PRUNED.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any, List, Optional, Sequence

from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from lmforge.compat import hydra as hydra_compat

log = logging.getLogger(__name__)
RESULTS = "optimization_results.yaml"


class OptunaSweeper(Sweeper):
    """Runs `n_trials` trials of the search space in `params` (plus the command line's sweeps)."""

    def __init__(self, direction: Optional[str], n_trials: int, n_jobs: int, sampler: Any, pruner: Any, storage: str,
                 study_name: str, heartbeat_interval: float, params: Optional[DictConfig],
                 seeds_per_trial: int = 1) -> None:
        self.direction = direction
        self.n_trials = int(n_trials)
        self.n_jobs = int(n_jobs) if int(n_jobs) > 0 else (os.cpu_count() or 1)  # joblib's -1: all cores
        self.sampler = sampler
        self.pruner = pruner
        self.storage = str(storage)
        self.study_name = str(study_name)
        self.heartbeat_interval = heartbeat_interval
        self.params = OmegaConf.to_container(params) if isinstance(params, DictConfig) else dict(params or {})
        self.seeds_per_trial = int(seeds_per_trial)

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: List[str]) -> List[Sequence[JobReturn]]:
        from lmforge.errors import UserError

        from ._search_space import SearchSpace
        from ._study import SharedStudy

        if self.n_trials < 1:
            raise UserError(f"hydra.sweeper.n_trials must be at least 1, got {self.n_trials}")
        space = SearchSpace.parse(self.params, arguments)
        seeds = trial_seeds(self.config, self.seeds_per_trial, space)
        direction = study_direction(self.config, self.direction)
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        shared = SharedStudy(self.storage, self.study_name, direction, self.sampler, self.pruner,
                             self.heartbeat_interval)
        metric = OmegaConf.select(self.config, "optimized_metric", default=None) or "value"
        done = len(shared.finished(shared.trials()))
        print(f"optuna: study '{self.study_name}' in {self.storage}: {done}/{self.n_trials} trials finished "
              f"(live view: optuna-dashboard {self.storage})", flush=True)
        returns: List[Sequence[JobReturn]] = []
        try:
            while (batch := shared.next_batch(self.n_trials, self.n_jobs, space.distributions)) is not None:
                if not batch:
                    shared.wait()
                    continue
                for run in consecutive(batch):
                    job_returns = self.launcher.launch(
                        [space.overrides(t.params) + seed for t in run for seed in seeds],
                        initial_job_idx=run[0].number * len(seeds))
                    returns.append(job_returns)
                    for i, trial in enumerate(run):
                        told = shared.tell(trial, trial_value(trial, job_returns[i * len(seeds):][:len(seeds)]))
                        value = f": {metric}={told.value:.6g}" if told.value is not None else ""
                        print(f"optuna: trial {told.number} {told.state.name.lower()}{value}", flush=True)
        finally:  # an interrupted sweep cuts its running trials off now: the next run re-runs them at once
            shared.close()
        write_results(shared, space, sweep_dir, self.n_trials, metric, len(seeds))
        return returns


def trial_seeds(config: DictConfig, seeds_per_trial: int, space) -> list[list[str]]:
    """The extra overrides of each of a trial's jobs: nothing for one seed, else `seed=<s>` for the run's
    seed and the next ones."""
    from lmforge.errors import UserError

    if seeds_per_trial < 1:
        raise UserError(f"hydra.sweeper.seeds_per_trial must be at least 1, got {seeds_per_trial}")
    if seeds_per_trial == 1:
        return [[]]
    if "seed" in space.distributions:
        raise UserError("hydra.sweeper.seeds_per_trial sets each job's seed: remove seed from the search space")
    first = OmegaConf.select(config, "seed", default=None) or 0
    return [[f"seed={first + i}"] for i in range(seeds_per_trial)]


def trial_value(trial, job_returns: Sequence[JobReturn]) -> Optional[float]:
    """The mean of the values of a trial's jobs (one per seed), None when one of them has none; the
    values per seed are kept on the trial (user attribute `values_per_seed`)."""
    values = [job_value(trial.number, ret) for ret in job_returns]
    if len(values) > 1:
        trial.set_user_attr("values_per_seed", values)
    if any(v is None for v in values):
        return None
    return sum(values) / len(values)


def study_direction(config: DictConfig, direction: Optional[str]) -> str:
    """`hydra.sweeper.direction` as given, else the rule of lmforge.metric_direction for `optimized_metric`
    (the run's monitor_mode when it monitors it, else its name); an unknown one is an error."""
    from lmforge.errors import UserError
    from lmforge.metric_direction import direction as metric_direction
    from lmforge.metric_direction import optuna_direction

    if direction is not None:
        return direction  # checked by SharedStudy
    metric = OmegaConf.select(config, "optimized_metric", default=None)
    monitored = metric and metric == OmegaConf.select(config, "monitor", default=None)
    found = optuna_direction(metric_direction(metric, OmegaConf.select(config, "monitor_mode", default=None)
                                              if monitored else None))
    if found is None:
        raise UserError(f"hydra.sweeper.direction: cannot tell whether optimized_metric '{metric}' is better "
                        f"lower or higher; set hydra.sweeper.direction=minimize or maximize")
    return found


def consecutive(trials: list) -> list[list]:
    """Trials split into runs of consecutive numbers: a launch numbers its jobs from one index on."""
    runs: list[list] = []
    for trial in sorted(trials, key=lambda t: t.number):
        if runs and runs[-1][-1].number + 1 == trial.number:
            runs[-1].append(trial)
        else:
            runs.append([trial])
    return runs


def job_value(number: int, ret: JobReturn) -> Optional[float]:
    """The job's returned value, or None (a FAIL trial) for a failed job or a missing/non-finite value."""
    if ret.status != JobStatus.COMPLETED:
        error = hydra_compat.job_error(ret)
        log.error("trial %d failed: %s: %s", number, type(error).__name__, str(error).splitlines()[0] if str(error) else "")
        return None
    try:
        value = float(ret.return_value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def write_results(shared, space, sweep_dir: Path, n_trials: int, metric: str, seeds_per_trial: int = 1) -> None:
    """`optimization_results.yaml` in the sweep directory, and one line naming the best trial."""
    import yaml
    from optuna.trial import TrialState

    from lmforge.atomic import write_text

    trials = shared.finished(shared.trials())
    counts = {state.name.lower(): sum(t.state == state for t in trials)
              for state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}
    tally = ", ".join(f"{n} {state}" for state, n in counts.items() if n)
    results: dict[str, Any] = {"name": "optuna", "study_name": shared.study.study_name,
                               "storage": shared.storage_name,
                               "direction": shared.study.direction.name.lower(),
                               "n_trials": len(trials), "trials": counts}
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if not complete:
        print(f"optuna: no trial completed ({tally}); sweep directory: {sweep_dir}")
    else:
        best = shared.study.best_trial
        results.update(best_trial=best.number, best_value=best.value, best_params=best.params)
        run_dirs = [sweep_dir / str(best.number * seeds_per_trial + i) for i in range(seeds_per_trial)]
        if run_dirs[0].is_dir():
            results["best_run_dir"] = str(run_dirs[0])
        if seeds_per_trial > 1:
            results.update(seeds_per_trial=seeds_per_trial, best_run_dirs=[str(d) for d in run_dirs],
                           best_values_per_seed=best.user_attrs.get("values_per_seed"))
        print(f"best trial {best.number}: {metric}={best.value:.6g} {space.describe(best.params)} "
              f"({len(trials)}/{n_trials} trials: {tally}; {RESULTS} in {sweep_dir})")
    write_text(sweep_dir / RESULTS, yaml.safe_dump(results, sort_keys=False))
