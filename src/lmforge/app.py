"""Run one command as a Hydra app; every error becomes one line and an exit status.

Exit statuses: 0 done, 2 bad input (`UserError`, Hydra/OmegaConf config errors), 1 a run that
failed (`RunFailed`) or a bug (with its traceback), 130 interrupted, 143 preempted. In a multirun
a failing job does not stop the sweep: its error is printed and recorded in its run.json (and so
in the sweep summary), and the job returns None to the sweeper. A single run's failure is recorded
in its run.json too, and a launch stopped by bad input before it wrote anything leaves no directory.
"""

from __future__ import annotations

import functools
import importlib
import os
import re
import sys
import traceback

from lmforge import signals
from lmforge.config import conf_dir
from lmforge.config.errors import describe_error, is_user_error
from lmforge.config.schema import COMMANDS
from lmforge.distributed import job_environment
from lmforge.errors import RunFailed, Stopped
from lmforge.job import in_multirun
from lmforge.signals import EXIT_STATUS

_LAUNCH: dict = {"made": None}  # the outermost directory of hydra.run.dir that this launch makes, if any


def run_command(command: str, args: list[str]) -> int:
    """Compose `conf/<command>.yaml` with `args` (Hydra syntax) and call the command's `main`."""
    from lmforge.compat import hydra as hydra_compat
    from lmforge.config.resolvers import register_resolvers

    register_resolvers()
    # transformers' per-load reports (e.g. "score.weight MISSING" for a new head) are expected here,
    # and per-shard loading bars are noise for models this size.
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    task = importlib.import_module(f"lmforge.commands.{command}").main
    parser = hydra_compat.args_parser()
    parser.prog = f"lmforge {command}"
    parser.error = functools.partial(_usage_error, command)
    # Intermixed: `lmforge train experiment=x -m a=1,2` (flags between overrides) works too.
    parsed = parser.parse_intermixed_args(args)
    parsed.overrides = quote_text(open_overlays(COMMANDS[command].overlays, parsed.overrides))
    _refuse_search_space_keys(parser, parsed.overrides)
    given = [o.split("=", 1)[1] for o in parsed.overrides if o.lstrip("+").startswith("hydra.run.dir=")]
    _LAUNCH["made"] = _first_missing(given[-1]) if given else None

    # Hydra prints its own multi-line reports unless told to let the exception reach us.
    wants_traceback = hydra_compat.pass_errors_through()
    report = functools.partial(_report, command=command, overrides=parsed.overrides,
                               wants_traceback=wants_traceback)

    @functools.wraps(task)
    def job(cfg):
        signals.install()  # (a sweep's worker process did not start through the CLI)
        try:
            with job_environment():
                return task(cfg)
        except (KeyboardInterrupt, signals.Signalled) as exc:  # outside a training loop (which stops there)
            stopped = Stopped(signals.stop_of(exc)[0], str(exc) or "interrupted")
            _close_failed_run(stopped)
            sys.exit(report(stopped))
        except Exception as exc:  # noqa: BLE001 - reported in one line, or re-raised
            if isinstance(exc, Stopped):  # a signal stops the whole sweep too
                _close_failed_run(exc)
                sys.exit(report(exc))
            if not in_multirun():
                status = report(exc)
                _close_failed_run(exc)
                sys.exit(status)
            _record_failed_job(exc, report)
            return None

    try:
        hydra_compat.run_hydra(args=parsed, args_parser=parser, task_function=job,
                               config_path=str(conf_dir()), config_name=command)
        if parsed.multirun:
            from lmforge.sweeps.summary import SweepSummary

            return 1 if SweepSummary.failed else 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
        if parsed.multirun and code in (130, 143):  # a job stopped by a signal stopped the sweep
            _stop_sweep(code)
        return code
    except (KeyboardInterrupt, signals.Signalled) as exc:
        print(str(exc) or "interrupted", file=sys.stderr)
        code = signals.stop_of(exc)[0]
        if parsed.multirun:
            _stop_sweep(code)
        return code
    except Exception as exc:  # noqa: BLE001 - composition errors: reported in one line
        return report(exc)
    return 0


def open_overlays(sections: tuple[str, ...], overrides: list[str]) -> list[str]:
    """Overlay sections patch a finished run's saved config: any key may be given (checked later
    against the run's own `_target_`), so `data.test_file=x.csv` needs no `+`."""
    opened = []
    for override in overrides:
        key = override.split("=", 1)[0]
        if "." in key and key.split(".")[0] in sections and not key.startswith(("+", "~")):
            override = f"++{override}"
        opened.append(override)
    return opened


# Keys whose values are free text: `prompt="def f(n):"` from a shell reaches Hydra unquoted, and its
# override grammar would reject the parentheses; such values are quoted for it.
TEXT_KEYS = ("prompt",)


def _refuse_search_space_keys(parser, overrides: list[str]) -> None:
    """`hydra.sweeper.params.optimizer.lr=...` cannot reach the sweeper (the key is named `optimizer.lr`,
    with a dot, and Hydra refuses sweep syntax in its own keys): the sweep on the command line does it."""
    prefix = "hydra.sweeper.params."
    for override in overrides:
        key, _, value = override.partition("=")
        if key.lstrip("+~").startswith(prefix):
            name = key.lstrip("+~")[len(prefix):]
            parser.error(f"{key}: give the search space of {name} as the sweep itself, {name}={value} "
                         "(with -m, it replaces the preset's)")


def quote_text(overrides: list[str]) -> list[str]:
    """Overrides of TEXT_KEYS with their value quoted for Hydra (unless it already is)."""
    quoted = []
    for override in overrides:
        key, sep, value = override.partition("=")
        already = len(value) >= 2 and value[0] in "'\"" and value[-1] == value[0]
        quoted.append(f"{key}={hydra_quoted(value)}" if sep and key.lstrip("+") in TEXT_KEYS and not already
                      else override)
    return quoted


def hydra_quoted(text: str) -> str:
    """`text` as a single-quoted Hydra string: quotes escaped, and the backslashes before a quote (or
    before the closing one) doubled, as Hydra's override grammar wants."""
    text = re.sub(r"(\\*)'", lambda m: m.group(1) * 2 + "\\'", text)
    text = re.sub(r"(\\+)$", lambda m: m.group(1) * 2, text)
    return f"'{text}'"


def _record_failed_job(exc: Exception, report) -> None:
    """A multirun job failed: print its one line (prefixed with the job) and record it in run.json."""
    from hydra.core.hydra_config import HydraConfig

    from lmforge.runs.directory import RunDir

    hydra = HydraConfig.get()
    sys.stdout.flush()
    print(f"[job {hydra.job.num}] ", end="", file=sys.stderr, flush=True)
    from optuna import TrialPruned

    status = "pruned" if isinstance(exc, TrialPruned) else "failed"
    if status == "pruned":
        print(f"pruned: {exc}", file=sys.stderr)
    else:
        report(exc)
    run = RunDir(hydra.runtime.output_dir)
    info = run.read_info()
    if not info or _written_here(info):
        run.finish(status, error=_error_text(exc), overrides=list(hydra.overrides.task))
    else:  # refused before it claimed the directory: the earlier run's record stays as it is
        from lmforge.sweeps.summary import SweepSummary

        SweepSummary.refused = _error_text(exc)


def _written_here(info: dict) -> bool:
    """Whether a run.json was written by this process (not by an earlier run in the same directory)."""
    return info.get("pid") == os.getpid()


def _error_text(exc: Exception) -> str:
    """The error as one line, for run.json (and so for the sweep summary and the report)."""
    return " ".join(str(exc).split()) or type(exc).__name__


def _close_failed_run(exc: Exception) -> None:
    """A single run failed or was stopped: the run.json this launch wrote says so, with the error (not
    "running" forever); a directory made for this launch (timestamped, new each time) that it left empty
    is removed, and so is a hydra.run.dir that this launch made. A directory that was there before, and any
    earlier run's record, stay as they are."""
    from hydra.core.hydra_config import HydraConfig

    from lmforge.job import run_dir_is_fixed
    from lmforge.runs.directory import RunDir

    if not _is_main_process():
        return
    hydra = HydraConfig.get()
    run = RunDir(hydra.runtime.output_dir)
    info = run.read_info()
    try:
        if _written_here(info) and info.get("status") in ("running", "failed", *EXIT_STATUS) and "error" not in info:
            status = ("interrupted" if exc.status == 130 else "preempted") if isinstance(exc, Stopped) else "failed"
            run.finish(status, error=_error_text(exc))
        elif not info and (not run_dir_is_fixed() or _LAUNCH["made"]):
            run.discard_if_unused(f"{hydra.job.name}.log")
            _remove_made_parents(run.path)
        elif not _written_here(info):  # refused a directory holding another run: leave it as it was
            log = run.path / f"{hydra.job.name}.log"
            if log.is_file() and log.stat().st_size == 0:
                log.unlink()
    except OSError:
        pass  # the error itself is already reported; an unwritable directory is not news


def _stop_sweep(code: int) -> None:
    """A signal stopped the sweep: its jobs still `running` are marked interrupted/preempted."""
    from lmforge.sweeps.summary import SweepSummary

    status = "interrupted" if code == 130 else "preempted"
    SweepSummary.stop_running(status, f"the sweep was {status} by {signals.received_name()}")


def _is_main_process() -> bool:
    """lmforge.distributed.is_main_process, but without importing Lightning where it is not imported yet:
    a signal may have cut its import short (half-made modules), and no rank was started by it then."""
    if "lightning" in sys.modules:
        from lmforge.distributed import is_main_process

        return is_main_process()
    ranks = ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK", "NODE_RANK")
    return all(int(os.environ.get(name, 0)) == 0 for name in ranks)


def _first_missing(run_dir: str):
    """The outermost directory of `run_dir` that does not exist yet (None when it all does)."""
    path, missing = os.path.abspath(os.path.expanduser(run_dir)), None
    while not os.path.lexists(path):
        path, missing = os.path.dirname(path), path
    return missing


def _remove_made_parents(run_dir) -> None:
    """After a refused launch removed its run directory: the empty parents this launch made go too."""
    made, path = _LAUNCH["made"], os.path.dirname(os.path.abspath(run_dir))
    while made and not os.path.exists(run_dir) and (path + os.sep).startswith(made + os.sep) \
            and not os.listdir(path):
        os.rmdir(path)
        path = os.path.dirname(path)


def _usage_error(command: str, message: str) -> None:
    """argparse's error, as one line (its default prints the whole usage first)."""
    print(f"error: lmforge {command}: {message} (see lmforge {command} --help)", file=sys.stderr)
    sys.exit(2)


def _report(exc: Exception, command: str, overrides: list[str], wants_traceback: bool) -> int:
    """Print `error: ...` and return the exit status (see the module docstring)."""
    if wants_traceback:
        raise exc
    sys.stdout.flush()
    if isinstance(exc, Stopped):
        print(str(exc), file=sys.stderr)
        return exc.status
    if isinstance(exc, RunFailed):
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    if is_user_error(exc):
        print(f"error: {describe_error(exc, command, overrides)}", file=sys.stderr)
        return 2
    traceback.print_exception(exc)
    print(f"error: unexpected {type(exc).__name__}: {exc} (a bug in lmforge? please report it)",
          file=sys.stderr)
    return 1
