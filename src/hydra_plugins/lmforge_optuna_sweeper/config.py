"""The config of the Optuna sweeper, registered as `hydra/sweeper: lmforge_optuna`."""

from dataclasses import dataclass, field
from typing import Any, Dict, Optional

from hydra.core.config_store import ConfigStore


@dataclass
class OptunaSweeperConf:
    _target_: str = "hydra_plugins.lmforge_optuna_sweeper.sweeper.OptunaSweeper"
    # minimize or maximize the value each job returns (lmforge: its `optimized_metric`); null: the run's
    # monitor_mode when it monitors that metric, else from the metric's name (lmforge.metric_direction)
    direction: Optional[str] = None
    # the study ends with this many finished trials (complete, pruned or failed), counted over every
    # process that shares the storage; re-running the command continues up to it
    n_trials: int = 20
    # trials asked at once and handed to the launcher together (launcher=joblib runs them in parallel)
    n_jobs: Any = "${oc.select:hydra.launcher.n_jobs,1}"
    # a `_target_` node, e.g. {_target_: optuna.samplers.TPESampler, seed: 1}; null: Optuna's default (TPE)
    sampler: Any = None
    # a `_target_` node, e.g. {_target_: optuna.pruners.MedianPruner}; null: never prune
    pruner: Any = None
    # a journal file (several processes and machines may share it) or an Optuna RDB URL (sqlite:///...)
    storage: str = "${hydra.sweep.dir}/optuna.journal"
    study_name: str = "${task_name}"
    # seconds between the heartbeats of running trials; a trial silent for 3 of them was cut off
    # (its process was killed) and is re-run
    heartbeat_interval: float = 30.0
    # jobs per trial, one per seed (`seed` = the config's seed, +1, +2, ...): the trial's value is their
    # mean, and the sweep summary shows each trial's seed group with its confidence interval. A trial
    # fails when one of its seeds fails; with a pruner, the first seed's job reports for the trial.
    seeds_per_trial: int = 1
    # key: search space in Hydra's override syntax: choice(a, b), range(1, 8), interval(0.1, 1.0),
    # int(interval(1, 8)), tag(log, interval(1e-4, 1e-2))
    params: Optional[Dict[str, str]] = field(default_factory=dict)


ConfigStore.instance().store(group="hydra/sweeper", name="lmforge_optuna", node=OptunaSweeperConf,
                             provider="lmforge")
