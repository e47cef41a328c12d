"""A multirun's summary: `sweep.csv` and `sweep.json` in its sweep directory, one row per job.

A Hydra callback (conf/hydra/default.yaml). Each job records itself when it starts (status
`running`) and when it ends (status and final metrics from its run.json and metrics.json: finished,
failed, pruned, preempted); rows are updated under a file lock, since jobs of a joblib or SLURM
launcher end in other processes. At the end the sweep prints a compact table sorted by
`optimized_metric` in its direction, names the best job and prints the sweep directory. Jobs that
differ only in `seed` form groups (lmforge.seed_groups): then the sweep shows each group's mean, 95 %
confidence interval and n, and names a best group only when it beats the runner-up significantly.
"""

from __future__ import annotations

import csv
import fcntl
import io
import json
import math
import os
import re
import shutil
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from lmforge.atomic import FILE_IN_THE_WAY, write_json, write_text
from lmforge.job import in_multirun
from lmforge.metric_direction import direction, optuna_direction
from lmforge.runs.redact import drop_files_with_secrets, redact, redact_file
from lmforge.seed_groups import ALPHA, Comparison, compare, differing
from lmforge.sweeps.grid import changed_job

SWEEP_PID = "LMFORGE_SWEEP_PID"  # the sweep's own process, as its jobs record it
SWEEP_SYNTAX = re.compile(r"^[^=]+=.*(,|\b(choice|range|interval|glob)\()")


def direction_of(metric: Optional[str], explicit: Optional[str] = None) -> Optional[str]:
    """"maximize" or "minimize" for a metric (lmforge.metric_direction's rule), None when unknown."""
    return optuna_direction(direction(metric, explicit))


class SweepSummary(Callback):
    #: Jobs of the last multirun of this process that failed: the CLI exits with status 1 when there
    #: are any, after the whole sweep ran.
    failed = 0
    #: The error of the job now ending when it was refused a directory holding an earlier run (set by
    #: the app in the job's process): that run's record and metrics are not the job's.
    refused: Optional[str] = None
    #: The sweep directory of this process's multirun (set when it starts), for `stop_running`.
    sweep_dir: Optional[Path] = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        launcher = str(OmegaConf.select(config, "hydra.launcher._target_") or "")
        if launcher.endswith("SlurmLauncher") and shutil.which("sbatch") is None:
            _stop("launcher=slurm needs a SLURM cluster (no sbatch here): run it on a login node, or "
                  "try the same code path on this machine with launcher=slurm_local")
        n_jobs = OmegaConf.select(config, "hydra.launcher.n_jobs")
        if launcher.endswith("JoblibLauncher") and (not isinstance(n_jobs, int) or n_jobs == 0):
            _stop(f"config key 'hydra.launcher.n_jobs': expected a number of parallel jobs >= 1 (or -1: one "
                  f"per core, -2: all but one...), got {n_jobs!r}")
        sweep_dir = Path(config.hydra.sweep.dir)
        if sweep_dir.exists() and not sweep_dir.is_dir():
            _stop(f"cannot write {sweep_dir}: {FILE_IN_THE_WAY}")
        metric = OmegaConf.select(config, "optimized_metric")
        monitor, monitor_mode = OmegaConf.select(config, "monitor"), OmegaConf.select(config, "monitor_mode")
        sweeper_direction = OmegaConf.select(config, "hydra.sweeper.direction")
        if sweeper_direction is None and metric and metric == monitor:
            sweeper_direction = monitor_mode
        overrides = list(config.hydra.overrides.task)
        params = [o.split("=", 1)[0].lstrip("+~") for o in overrides if SWEEP_SYNTAX.match(o)]
        params += list((OmegaConf.select(config, "hydra.sweeper.params") or {}).keys())
        replaced = _refuse_a_second_grid(config, sweep_dir, sorted(set(params)))
        head = {"sweep_dir": str(sweep_dir), "command": " ".join(["lmforge", config.hydra.job.name, *overrides]),
                "optimized_metric": metric, "direction": direction_of(metric, sweeper_direction),
                "params": sorted(set(params)), "monitor": monitor,
                "monitor_direction": direction_of(monitor, monitor_mode)}
        with _locked(sweep_dir) as summary:
            summary.update({**head, "jobs": [] if replaced else summary.get("jobs", [])})
        SweepSummary.sweep_dir = sweep_dir
        os.environ[SWEEP_PID] = str(os.getpid())  # inherited by the launcher's worker processes

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        from hydra.core.hydra_config import HydraConfig

        if not in_multirun():  # Hydra calls job callbacks for single runs too
            return
        hydra = HydraConfig.get()
        overrides = list(hydra.overrides.task)
        redact_file(Path(hydra.sweep.dir) / "multirun.yaml")  # Hydra's snapshot, written just before
        print(redact(f"[job {hydra.job.num}] {' '.join(overrides) or '(no overrides)'} -> {hydra.runtime.output_dir}"),
              flush=True)
        self._record(Path(hydra.sweep.dir), {"job": hydra.job.num, "overrides": overrides, "status": "running",
                                             "run_dir": hydra.runtime.output_dir, "metrics": {},
                                             "sweep_pid": int(os.environ.get(SWEEP_PID, os.getpid()))})

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        from hydra.core.hydra_config import HydraConfig

        if not in_multirun():
            return
        hydra = HydraConfig.get()
        run_dir = Path(hydra.runtime.output_dir)
        if SweepSummary.refused:  # the directory holds an earlier run, not this job's: none of it is the job's
            row = {"job": hydra.job.num, "status": "failed", "metrics": {}, "error": SweepSummary.refused}
            SweepSummary.refused = None
            self._record(Path(hydra.sweep.dir), row)
            return
        info = _read_json(run_dir / "run.json")
        status = info.get("status") or ("finished" if job_return.status.name == "COMPLETED" else "failed")
        row = {"job": hydra.job.num, "status": "finished" if status == "running" else status,
               "metrics": _read_json(run_dir / "metrics.json")}
        if info.get("error"):
            row["error"] = info["error"]
        self._record(Path(hydra.sweep.dir), row)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        drop_files_with_secrets(sweep_dir / ".submitit", "*.pkl")  # the jobs' configs, with their env_set
        summary = _read_json(sweep_dir / "sweep.json")
        SweepSummary.failed = sum(job.get("status") == "failed" for job in summary.get("jobs", []))
        print(render(summary))
        print(f"sweep directory: {sweep_dir}")

    @staticmethod
    def stop_running(status: str, reason: str) -> None:
        """This process's sweep was stopped by a signal: its jobs still `running` (in sweep.json/csv and
        in their run.json) are marked `status` with `reason`; those of other processes sharing the sweep
        directory (an Optuna study filled by several) stay as they are."""
        from lmforge.runs.directory import RunDir

        if SweepSummary.sweep_dir is None:
            return
        with _locked(SweepSummary.sweep_dir) as summary:
            for job in summary.get("jobs", []):
                if job.get("status") == "running" and job.get("sweep_pid") == os.getpid():
                    run = RunDir(job["run_dir"])
                    info = run.read_info()
                    if info.get("status") == "running":
                        run.finish(status, error=reason)
                    own = info.get("status") in ("interrupted", "preempted")  # the job's own line says more
                    job.update(status=info["status"] if own else status,
                               error=info.get("error") or reason if own else reason)

    @staticmethod
    def _record(sweep_dir: Path, row: dict) -> None:
        with _locked(sweep_dir) as summary:
            jobs = summary.setdefault("jobs", [])
            found = next((job for job in jobs if job["job"] == row["job"]), None)
            if found is None:
                jobs.append(row)
            else:
                found.update(row)
            jobs.sort(key=lambda job: job["job"])


def _stop(message: str) -> None:
    """Stop the sweep with one error line, exit 2: Hydra turns a callback's exception into a warning and
    goes on, so a callback stops it itself."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def _refuse_a_second_grid(config: DictConfig, sweep_dir: Path, swept: list[str]) -> bool:
    """A grid sweep into a directory holding an earlier sweep would only fail job by job (their directories
    hold runs) and replace its summary: stop unless its jobs are to go on (resume=auto, the same grid: job N
    keeps its parameters) or be replaced (overwrite=true). An Optuna sweep is continued this way by design:
    its trials are new jobs. True when the earlier jobs are replaced."""
    summary = _read_json(sweep_dir / "sweep.json")
    sweeper = str(OmegaConf.select(config, "hydra.sweeper._target_") or "")
    if not summary.get("jobs") or not sweeper.endswith("BasicSweeper"):
        return False
    if OmegaConf.select(config, "overwrite") is True:
        return True
    if OmegaConf.select(config, "resume") != "auto":
        _stop(f"{sweep_dir} already holds a sweep ({len(summary['jobs'])} jobs): continue its jobs with resume=auto, "
              "replace them with overwrite=true, or choose another hydra.sweep.dir")
    changed = changed_job(summary, config, swept)
    if changed:
        _stop(f"{sweep_dir} holds a sweep of another grid ({changed}): resume=auto continues the same jobs only; "
              "replace them with overwrite=true, or choose another hydra.sweep.dir")
    return False


def ranked(summary: dict) -> list[dict]:
    """Jobs best first by the optimized metric (jobs without a finite value last, in job order); in job
    order when it is not known whether lower or higher is better."""
    metric = summary.get("optimized_metric")
    sign = {"maximize": -1, "minimize": 1}.get(summary.get("direction"), 0)

    def key(job: dict) -> tuple:
        value = job.get("metrics", {}).get(metric)
        ok = isinstance(value, (int, float)) and math.isfinite(value) and job.get("status") == "finished"
        return (0, sign * value, job["job"]) if ok else (1, 0, job["job"])

    return sorted(summary.get("jobs", []), key=key) if metric else list(summary.get("jobs", []))


def seed_comparison(summary: dict, alpha: float = ALPHA) -> Optional[Comparison]:
    """The finished jobs in groups that differ only in `seed`, on the optimized metric (else the
    monitor); None when no seed was repeated."""
    metric = summary.get("optimized_metric") or summary.get("monitor")
    if not metric:
        return None
    way = summary.get("direction") if summary.get("optimized_metric") else summary.get("monitor_direction")
    jobs = [job for job in summary.get("jobs", []) if job.get("status") == "finished"]
    settings = differing([_parse(job.get("overrides", [])) for job in jobs])
    values = [job.get("metrics", {}).get(metric) for job in jobs]
    items = [(s, float(v) if isinstance(v, (int, float)) else None, job["job"])
             for s, v, job in zip(settings, values, jobs)]
    return compare(items, metric, direction(metric, way), alpha)


def render(summary: dict) -> str:
    """The end-of-sweep table (job, status, overrides, metric), best first, and the best job's line;
    with repeated seeds, each group's mean ± 95 % CI and n, and the best group only if significant."""
    metric = summary.get("optimized_metric")
    jobs = ranked(summary)
    common = set.intersection(*(set(job.get("overrides", [])) for job in jobs)) if len(jobs) > 1 else set()
    lines = [f"{'job':>4}  {'status':<9}  {(metric or 'metric'):>12}  overrides"]
    for job in jobs:
        value = job.get("metrics", {}).get(metric) if metric else None
        shown = f"{value:.4g}" if isinstance(value, (int, float)) else "-"
        lines.append(f"{job['job']:>4}  {job.get('status', '?'):<9}  {shown:>12}  {' '.join(o for o in job.get('overrides', []) if o not in common)}")
    finished = [j for j in jobs if j.get("status") == "finished"]
    comparison = seed_comparison(summary)
    if comparison:
        lines.append(f"seed groups on {comparison.metric} (mean ± 95% CI, n):")
        lines += [f"  {group.label}: {group.describe()} jobs {','.join(map(str, group.members))}"
                  for group in comparison.groups]
        lines.append(comparison.verdict())
    elif metric and summary.get("direction") and finished and metric in finished[0].get("metrics", {}):
        best = jobs[0]
        lines.append(f"best: job {best['job']} ({metric}={best['metrics'][metric]:.4g}, "
                     f"{summary.get('direction')}) {best.get('run_dir', '')}")
    failed = [j for j in jobs if j.get("status") == "failed"]
    if failed:
        lines.append(f"{len(failed)} of {len(jobs)} jobs failed: see the error column of sweep.csv")
    return "\n".join(lines)


@contextmanager
def _locked(sweep_dir: Path) -> Iterator[dict]:
    """Read sweep.json under an exclusive lock, let the caller change it, write sweep.json and sweep.csv."""
    sweep_dir.mkdir(parents=True, exist_ok=True)
    with open(sweep_dir / ".sweep.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        summary = _read_json(sweep_dir / "sweep.json")
        yield summary
        comparison = seed_comparison(summary)
        summary["seed_groups"] = comparison.as_dict() if comparison else None
        for row, group in zip(summary["seed_groups"]["groups"] if comparison else [],
                              comparison.groups if comparison else []):
            row["jobs"] = group.members  # job numbers
        summary = redact(summary)
        write_json(sweep_dir / "sweep.json", summary)
        write_text(sweep_dir / "sweep.csv", to_csv(summary))


def to_csv(summary: dict) -> str:
    jobs = summary.get("jobs", [])
    metrics = sorted({m for job in jobs for m in job.get("metrics", {})})
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    comparison = seed_comparison(summary)
    groups = {job: group for group in comparison.groups for job in group.members} if comparison else {}
    group_columns = ["group", "group_n", "group_mean", "group_ci_low", "group_ci_high"] if comparison else []
    writer.writerow(["job", "status", "overrides", "run_dir", *metrics, "error", *group_columns])
    for job in jobs:
        group = groups.get(job["job"])
        low, high = (group.ci or ("", "")) if group else ("", "")
        in_group = [group.label, group.n, group.mean, low, high] if group else [""] * 5
        writer.writerow([job["job"], job.get("status"), " ".join(job.get("overrides", [])), job.get("run_dir"),
                         *[job.get("metrics", {}).get(m, "") for m in metrics], job.get("error", ""),
                         *(in_group if comparison else [])])
    return out.getvalue()


def _parse(overrides: list) -> dict[str, str]:
    """`["model.activation=relu", "+x=1"]` -> {"model.activation": "relu", "x": "1"}."""
    pairs = (str(o).partition("=") for o in overrides)
    return {key.lstrip("+~"): value for key, _, value in pairs}


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
