"""Hydra's private names that lmforge relies on, each behind one small function or constant."""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Any, Callable, Iterator

DISTRIBUTION = "hydra-core"
CHECKED = ">=1.3.2,<1.4"

FULL_ERROR = "HYDRA_FULL_ERROR"
"""With it "1", Hydra re-raises an app's exception; else it prints its own report and exits 1."""
_OWN_FLAG = "_LMFORGE_SET_HYDRA_FULL_ERROR"  # FULL_ERROR was set by lmforge, not by the user


def args_parser() -> Any:
    """Hydra's command-line parser (overrides, --multirun, --cfg, ...), as `hydra.main` uses it."""
    from hydra._internal.utils import get_args_parser

    return get_args_parser()


def run_hydra(args: Any, args_parser: Any, task_function: Callable, config_path: str,
              config_name: str) -> None:
    """Run `task_function` as a Hydra app with arguments already parsed (`hydra.main` parses sys.argv)."""
    from hydra._internal.utils import _run_hydra

    with _mode_from_command_line(args):
        _run_hydra(args=args, args_parser=args_parser, task_function=task_function, config_path=config_path,
                   config_name=config_name)


@contextlib.contextmanager
def _mode_from_command_line(args: Any) -> Iterator[None]:
    """Hydra composes the whole config once only to read `hydra.mode` (a third of a short run's start-up),
    then again to run. lmforge's presets never set `hydra.mode`, so unless the command line does (or
    brings config directories of its own), the mode is `-m` or not, as Hydra decides when none is set."""
    from hydra._internal.hydra import Hydra

    overrides = " ".join(args.overrides)
    if args.config_dir is not None or "hydra.mode" in overrides or "searchpath" in overrides:
        yield
        return
    own = Hydra.get_mode
    Hydra.get_mode = lambda self, config_name, overrides: None  # type: ignore[method-assign]
    try:
        yield
    finally:
        Hydra.get_mode = own  # type: ignore[method-assign]


def pass_errors_through() -> bool:
    """Make Hydra re-raise an app's exceptions to `run_hydra`'s caller; True if the user had asked for
    full tracebacks (HYDRA_FULL_ERROR=1) themselves."""
    wants_traceback = os.environ.get(FULL_ERROR) == "1" and _OWN_FLAG not in os.environ
    if not wants_traceback:
        os.environ[FULL_ERROR] = "1"
        os.environ[_OWN_FLAG] = "1"
    return wants_traceback


def job_error(ret: Any) -> BaseException:
    """The exception a failed job of a sweep raised (the public `return_value` re-raises it, after a
    message of its own on stderr)."""
    return ret._return_value


@contextlib.contextmanager
def _quiet(logger_name: str) -> Iterator[None]:
    logger = logging.getLogger(logger_name)
    silence = lambda record: False  # noqa: E731 - a filter dropping every record
    logger.addFilter(silence)
    try:
        yield
    finally:
        logger.removeFilter(silence)


def locate(path: str) -> Any:
    """The object at dotted `path` (`hydra.utils.get_object`), without the error Hydra logs when
    there is none: the caller reports that in its own words."""
    from hydra.utils import get_object

    with _quiet("hydra.utils"):
        return get_object(path)


def grid_jobs(arguments: list[str]) -> list[list[str]]:
    """Each job's overrides of a grid sweep over `arguments` (`key=a,b` ...), in job order, as Hydra's
    BasicSweeper (a class of Hydra's private modules) makes them."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(arguments)
    return [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]
