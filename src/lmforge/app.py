"""Run one command as a Hydra app and turn every input error into one line and exit status 2."""

from __future__ import annotations

import functools
import importlib
import os
import sys
import traceback

from lmforge.config import conf_dir
from lmforge.config.errors import describe_error, is_user_error

_OWN_FLAG = "_LMFORGE_SET_HYDRA_FULL_ERROR"
# Sections that patch a finished run's saved config: any key may be given (checked later against
# the run's own `_target_`), so `data.test_file=x.csv` needs no `+`.
OVERLAY_SECTIONS = {"eval": ("data", "module"), "generate": ("data", "model"), "export": ("data", "model")}


def open_overlays(command: str, overrides: list[str]) -> list[str]:
    sections = OVERLAY_SECTIONS.get(command, ())
    opened = []
    for override in overrides:
        key = override.split("=", 1)[0]
        if "." in key and key.split(".")[0] in sections and not key.startswith(("+", "~")):
            override = f"++{override}"
        opened.append(override)
    return opened


def run_command(command: str, module_name: str, args: list[str]) -> int:
    """Compose `conf/<command>.yaml` with `args` (Hydra syntax) and call the command's task."""
    from hydra._internal.utils import _run_hydra, get_args_parser

    from lmforge.config.resolvers import register_resolvers

    register_resolvers()
    # transformers' per-load reports (e.g. "score.weight MISSING" for a new head) are expected here,
    # and per-shard loading bars are noise for models this size.
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    task = importlib.import_module(f"lmforge.commands.{module_name}").main
    parser = get_args_parser()
    parser.prog = f"lmforge {command}"
    # Intermixed: `lmforge train experiment=x -m a=1,2` (flags between overrides) works too.
    parsed = parser.parse_intermixed_args(args)
    parsed.overrides = open_overlays(command, parsed.overrides)

    # Hydra prints its own multi-line reports unless HYDRA_FULL_ERROR=1; we set it so that the
    # exception reaches us, and remember whether the user asked for full tracebacks themselves.
    wants_traceback = os.environ.get("HYDRA_FULL_ERROR") == "1" and _OWN_FLAG not in os.environ
    if not wants_traceback:
        os.environ["HYDRA_FULL_ERROR"] = "1"
        os.environ[_OWN_FLAG] = "1"
    report = functools.partial(_report, command=command, overrides=parsed.overrides,
                               wants_traceback=wants_traceback)

    @functools.wraps(task)
    def reporting_task(cfg):
        # Errors inside a job leave through SystemExit: Hydra would otherwise add its own lines.
        try:
            return task(cfg)
        except Exception as exc:  # noqa: BLE001 - reported in one line, or re-raised
            sys.exit(report(exc))

    try:
        _run_hydra(args=parsed, args_parser=parser, task_function=reporting_task,
                   config_path=str(conf_dir()), config_name=command)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - composition errors: reported in one line
        return report(exc)
    return 0


def _report(exc: Exception, command: str, overrides: list[str], wants_traceback: bool) -> int:
    """Print `error: ...` and return the exit status: 2 for bad input, 1 for a bug (with traceback)."""
    if wants_traceback:
        raise exc
    sys.stdout.flush()
    if is_user_error(exc):
        print(f"error: {describe_error(exc, command, overrides)}", file=sys.stderr)
        return 2
    traceback.print_exception(exc)
    print(f"error: unexpected {type(exc).__name__}: {exc} (a bug in lmforge? please report it)",
          file=sys.stderr)
    return 1
