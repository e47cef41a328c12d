"""Turn Hydra/OmegaConf/lmforge exceptions into the one line a user sees."""

from __future__ import annotations

import errno
import re
import sys
from typing import Iterator

import yaml

from lmforge.atomic import unwritable_reason
from lmforge.errors import UserError

# Root causes that mean "a bad value in the config" when raised while instantiating a section.
_BAD_VALUE = (ValueError, TypeError, FileNotFoundError, NotADirectoryError, KeyError)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _missing_file(exc: BaseException) -> bool:
    """A path the user gave does not exist (raised by a library before lmforge could name the key)."""
    return isinstance(exc, FileNotFoundError) and exc.filename is not None


def _misconfiguration() -> type | tuple:
    """Lightning's exception for a bad trainer setting; () when Lightning is not loaded (none was raised),
    so that a config error does not pay for importing it."""
    module = sys.modules.get("lightning.fabric.utilities.exceptions")
    return module.MisconfigurationException if module is not None else ()


# OSErrors that say a path given is unusable as written, whatever the file system holds.
_BAD_PATH = {errno.ENAMETOOLONG: "file name too long for the file system",
             errno.ELOOP: "a symlink loop (a link that points back to itself)"}


def bad_path_reason(exc: BaseException) -> str | None:
    """Why a path the user gave cannot be used at all (too long, a symlink loop), else None."""
    if isinstance(exc, OSError) and exc.filename is not None:
        return _BAD_PATH.get(exc.errno)
    return None


def _no_memory(exc: BaseException) -> bool:
    """Whether building a section ran out of memory (model.hidden=[10000000000000]): a size, not a bug."""
    text = str(exc)
    return isinstance(exc, MemoryError) or isinstance(exc, RuntimeError) and (
        "not enough memory" in text or "can't allocate memory" in text or "out of memory" in text)


def _root(exc: BaseException) -> BaseException:
    return list(_chain(exc))[-1]


def is_user_error(exc: BaseException) -> bool:
    """Whether `exc` comes from bad input (config, overrides, files) rather than a bug."""
    from hydra.errors import HydraException, InstantiationException
    from omegaconf.errors import OmegaConfBaseException

    MisconfigurationException = _misconfiguration()
    chain = list(_chain(exc))
    if any(isinstance(e, (UserError, MisconfigurationException)) for e in chain):
        return True
    if any(isinstance(e, yaml.YAMLError) or unwritable_reason(e) or _missing_file(e) or bad_path_reason(e)
           for e in chain):
        return True
    if isinstance(exc, InstantiationException):
        root = _root(exc)
        return isinstance(root, (*_BAD_VALUE, MisconfigurationException)) or _no_memory(root)
    return isinstance(exc, (HydraException, OmegaConfBaseException))


def describe_error(exc: BaseException, command: str, overrides: list[str]) -> str:
    """One line naming the key, preset, file or line that is wrong."""
    from hydra.errors import InstantiationException, MissingConfigException, OverrideParseException
    MisconfigurationException = _misconfiguration()

    for e in _chain(exc):
        if isinstance(e, UserError):
            return _one_line(str(e))
        if isinstance(e, yaml.MarkedYAMLError) and e.problem_mark is not None:
            mark = e.problem_mark
            return f"{mark.name}:{mark.line + 1}:{mark.column + 1}: YAML syntax error: {e.problem}"
        if unwritable_reason(e):
            return f"cannot write {e.filename}: {unwritable_reason(e)}"
        if _missing_file(e):
            return f"{e.filename}: no such file or directory"
        if bad_path_reason(e):
            return f"{e.filename}: {bad_path_reason(e)}"
        if isinstance(e, MisconfigurationException):
            return _one_line(str(e))
    if isinstance(exc, MissingConfigException):
        return _missing_preset(exc)
    if isinstance(exc, OverrideParseException):
        return f"cannot parse override: {_one_line(str(exc))}"
    if isinstance(exc, InstantiationException):
        root = _root(exc)
        key = _full_key(exc)
        target = re.search(r"target '([^']+)'", str(exc))
        where = (f"config section '{key}'" if key else f"the config section of {target.group(1)}" if target
                 else "a config section")
        if _no_memory(root):
            return f"{where}: not enough memory to build it (a size too large?): {_one_line(str(root))[:200]}"
        return f"{where}: {type(root).__name__}: {_one_line(str(root))}"
    key = _full_key(exc)
    message = str(exc)
    if "is not in struct" in message or "Could not override" in message:
        bad = re.search(r"Could not (?:override|append to) '([^']+)'", message)
        bad_key = bad.group(1) if bad else key
        if bad_key and bad_key.startswith("data.sources."):  # a mixture's sources are added, none is preset
            return f"unknown config key '{bad_key}': a source's keys are added with '+': +{bad_key}=..."
        if bad_key:
            return f"unknown config key '{bad_key}'{_suggest_key(bad_key, command, overrides)}"
    first = _one_line(message.splitlines()[0] if message else type(exc).__name__)
    return f"{first} (config key '{key}')" if key and key not in first else first


def _missing_preset(exc) -> str:
    missing = getattr(exc, "missing_cfg_file", "") or ""  # getattr: optional attributes of Hydra's exception
    options = getattr(exc, "options", None) or []
    group, _, name = missing.rpartition("/")
    if group and options:
        from lmforge.config.validate import did_you_mean

        return (f"unknown {group} preset '{name}'{did_you_mean(name, options)}; "
                f"options: {', '.join(sorted(options))}")
    return _one_line(str(exc).splitlines()[0])


def _suggest_key(bad_key: str, command: str, overrides: list[str]) -> str:
    """Did-you-mean for a key: compose the config with the user's preset choices and compare."""
    from lmforge.config.validate import did_you_mean

    try:
        from hydra import compose, initialize_config_dir
        from omegaconf import OmegaConf

        from lmforge.config import conf_dir

        groups = {p.name for p in conf_dir().iterdir() if p.is_dir()}
        choices = [o for o in overrides if "=" in o and o.split("=")[0].lstrip("+~") in groups
                   and "," not in o]
        with initialize_config_dir(str(conf_dir()), version_base="1.3"):
            cfg = compose(command, overrides=choices)
        parent, _, _ = bad_key.rpartition(".")
        node = OmegaConf.select(cfg, parent) if parent else cfg
        keys = [f"{parent}.{k}" if parent else str(k) for k in (node.keys() if node is not None else [])]
        return did_you_mean(bad_key, keys)
    except Exception:  # noqa: BLE001 - a suggestion is a nicety; never fail the report over it
        return ""


def _full_key(exc: BaseException) -> str:
    for e in _chain(exc):
        key = getattr(e, "full_key", None)  # getattr: only OmegaConf's exceptions name a key
        if key:
            return str(key)
        found = re.search(r"full_key: (\S+)", str(e))
        if found:
            return found.group(1)
    return ""


def _one_line(text: str) -> str:
    return " ".join(text.split())
