"""Check a composed config before anything is built: every key known, every value well typed.

Sections with a `_target_` are checked against the signature (and type hints) of what they
instantiate, so a preset can never drift from the code silently; the toolkit's own sections are
checked against the dataclasses of `lmforge.config.schema`.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import difflib
import inspect
import types
import typing
from typing import Any, Literal, Union

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from lmforge.config.schema import COMMAND_SCHEMAS, SECTION_SCHEMAS
from lmforge.errors import UserError

MISSING = "???"
# Sections that hold named `_target_` nodes (callbacks.model_checkpoint, logger.csv, ...).
COLLECTIONS = ("callbacks", "logger")


def did_you_mean(word: str, choices: typing.Iterable[str], prefix: str = "") -> str:
    """' (did you mean 'prefix.x'?)' for the closest choice, or ''."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{prefix}{close[0]}'?)" if close else ""


def to_plain(cfg: DictConfig) -> dict:
    """The config as plain Python, every interpolation resolved; bad interpolations name their key."""
    try:
        return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None) or "?"
        msg = str(exc).splitlines()[0]
        raise UserError(f"config key '{key}': {msg}") from exc


def validate(cfg: DictConfig, command: str, overlays: tuple[str, ...] = ()) -> dict:
    """Validate the composed config of `command`; return it as resolved plain Python."""
    plain = to_plain(cfg)
    schema = COMMAND_SCHEMAS.get(command)
    fields = {f.name: f for f in dataclasses.fields(schema)} if schema else {}
    allowed = set(fields) | set(SECTION_SCHEMAS) | set(COLLECTIONS) | {"data", "model", "module", "optimizer",
                                                                      "scheduler", "trainer", "tokenizer"}
    for key, value in plain.items():
        if key in overlays:
            continue
        if key in fields:
            check_value(key, value, _hints(schema).get(key, Any))
        elif key in SECTION_SCHEMAS:
            check_section(key, value, SECTION_SCHEMAS[key])
        elif key in COLLECTIONS:
            for name, node in (value or {}).items():
                check_node(f"{key}.{name}", node)
        elif key in allowed:
            check_node(key, value)
        else:
            raise UserError(f"unknown config key '{key}'{did_you_mean(key, allowed)}")
    return plain


def check_section(key: str, node: Any, schema: type) -> None:
    """A plain section against its dataclass: known keys, right types, no missing values."""
    if not isinstance(node, dict):
        raise UserError(f"config key '{key}': expected a mapping, got {node!r}")
    hints = _hints(schema)
    names = [f.name for f in dataclasses.fields(schema)]
    for name, value in node.items():
        if name not in hints:
            raise UserError(f"unknown config key '{key}.{name}'{did_you_mean(name, names, f'{key}.')}")
        check_value(f"{key}.{name}", value, hints[name])


def check_node(key: str, node: Any) -> None:
    """A `_target_` node: the target imports, its keys are parameters, its values fit their hints."""
    if node is None or not isinstance(node, dict) or "_target_" not in node:
        if isinstance(node, dict):
            for name, value in node.items():
                if isinstance(value, dict) and "_target_" in value:
                    check_node(f"{key}.{name}", value)
        return
    target = node["_target_"]
    obj = locate(f"{key}._target_", target)
    params, hints, open_kwargs = _signature(obj)
    for name, value in node.items():
        if name.startswith("_") and name.endswith("_"):
            continue
        full = f"{key}.{name}"
        if name not in params:
            if open_kwargs:
                continue
            raise UserError(f"unknown config key '{full}'{did_you_mean(name, params, f'{key}.')} "
                            f"({target} takes: {', '.join(params)})")
        if isinstance(value, dict) and "_target_" in value:
            check_node(full, value)
        elif isinstance(value, list) and any(isinstance(v, dict) and "_target_" in v for v in value):
            for i, item in enumerate(value):
                check_node(f"{full}[{i}]", item)
        else:
            check_value(full, value, hints.get(name, Any))


def check_value(key: str, value: Any, hint: Any) -> None:
    if value == MISSING:
        raise UserError(f"missing required value '{key}' (set it with {key}=...)")
    if conforms(value, hint):
        return
    choices = typing.get_args(hint) if typing.get_origin(hint) is Literal else ()
    if choices and isinstance(value, str):
        options = [str(c) for c in choices]
        raise UserError(f"config key '{key}': '{value}' is not one of {', '.join(options)}"
                        f"{did_you_mean(value, options)}")
    raise UserError(f"config key '{key}': expected {describe(hint)}, got {value!r}")


def locate(key: str, target: str) -> Any:
    from hydra._internal.utils import _locate

    try:
        return _locate(target)
    except Exception as exc:  # noqa: BLE001 - any import failure is the user's bad _target_
        cause = exc.__cause__ or exc
        reason = f"{type(cause).__name__}: {str(cause).splitlines()[0]}"
        raise UserError(f"config key '{key}': cannot import '{target}' ({reason})") from exc


def conforms(value: Any, hint: Any) -> bool:
    """Whether a plain config value can be passed where `hint` is expected (lenient on the unknown)."""
    if hint is Any or hint is inspect.Parameter.empty or isinstance(hint, (str, typing.ForwardRef)):
        return True
    if isinstance(value, dict) and "_target_" in value:
        return True  # instantiated to an object first
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Union or origin is types.UnionType:
        return any(conforms(value, a) for a in args)
    if hint is type(None):
        return value is None
    if origin is Literal:
        return value in args
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if hint in (list, tuple) or origin in (list, tuple, collections.abc.Sequence, collections.abc.Iterable):
        if not isinstance(value, (list, tuple)):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(args) == len(value) and all(conforms(v, a) for v, a in zip(value, args))
        return not args or all(conforms(v, args[0]) for v in value)
    if hint is dict or origin in (dict, collections.abc.Mapping):
        return isinstance(value, dict)
    if isinstance(hint, type) and hint.__module__ in ("pathlib", "os"):
        return isinstance(value, str)
    if isinstance(hint, type) and value is not None:
        return isinstance(value, hint) or not isinstance(value, (int, float, str, bool, list))
    return True


def describe(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Union or origin is types.UnionType:
        return " or ".join(describe(a) for a in args)
    if hint is type(None):
        return "null"
    if origin is Literal:
        return "one of " + ", ".join(map(str, args))
    if origin in (list, tuple, collections.abc.Sequence) and args:
        return f"a list of {describe(args[0])}"
    return getattr(hint, "__name__", str(hint))


def _signature(obj: Any) -> tuple[list[str], dict[str, Any], bool]:
    func = obj.__init__ if inspect.isclass(obj) else obj
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return [], {}, True
    params = [p.name for p in sig.parameters.values()
              if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    open_kwargs = any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())
    return params, _hints(func), open_kwargs


def _hints(obj: Any) -> dict[str, Any]:
    try:
        return typing.get_type_hints(obj)
    except Exception:  # noqa: BLE001 - unresolvable annotations are simply not checked
        return {k: v for k, v in getattr(obj, "__annotations__", {}).items() if not isinstance(v, str)}
