"""Check a composed config before anything is built: every key known, every value well typed.

A `_target_` section is checked against the signature of what it instantiates (its parameters are
the keys, its type hints the types, validated by pydantic), so a preset can never drift from the
code silently; a command's own keys against their typed schema in `lmforge.config.schema`.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import inspect
import math
import typing
from typing import Any, Iterable

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from pydantic import ConfigDict, TypeAdapter, ValidationError

from lmforge.config.schema import COMMANDS, LIBRARY_HINTS, OPEN_ENDED_SECTIONS
from lmforge.errors import UserError

MISSING = "???"
MAX_INT = 2**63 - 1
_LAX = ConfigDict(arbitrary_types_allowed=True)  # YAML lists pass for tuples, strings for paths


def did_you_mean(word: str, choices: Iterable[str], prefix: str = "") -> str:
    """' (did you mean 'prefix.x'?)' for the closest choice, or ''."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{prefix}{close[0]}'?)" if close else ""


def to_plain(cfg: DictConfig) -> dict:
    """The config as plain Python, every interpolation resolved; bad interpolations name their key."""
    try:
        return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None) or "?"  # getattr: OmegaConf's exception may name no key
        msg = str(exc).splitlines()[0]
        raise UserError(f"config key '{key}': {msg}") from exc


def validate(cfg: DictConfig, command: str) -> dict:
    """Validate the composed config of `command`; return it as resolved plain Python."""
    plain = to_plain(cfg)
    spec = COMMANDS[command]
    fields = {f.name for f in dataclasses.fields(spec.keys)}
    known = fields | set(spec.sections) | set(spec.collections) | set(spec.overlays) | set(spec.plain)
    for key in plain:
        if key not in known:
            raise UserError(f"unknown config key '{key}'{did_you_mean(key, known)}")
    for key, value in plain.items():
        check_numbers(key, value, finite=key not in OPEN_ENDED_SECTIONS)
    # The command's own keys first: a section interpolating one of them (module.nan_policy: ${nan_policy})
    # would otherwise be blamed for it.
    check_schema("", {k: v for k, v in plain.items() if k in fields}, spec.keys)
    for key in spec.sections:
        if key in plain:
            check_node(key, plain[key])
    for key in spec.collections:
        for name, node in (plain.get(key) or {}).items():
            check_node(f"{key}.{name}", node)
    for key, schema in spec.plain.items():
        if key in plain:
            check_schema(key, plain[key], schema)
    return plain


def check_numbers(key: str, value: Any, finite: bool) -> None:
    """No number the code cannot take: an integer past 64 bits (torch, numpy and itertools refuse it
    deep inside a run), or, with `finite`, inf or nan (a learning rate of inf trains to nan)."""
    if isinstance(value, dict):
        for name, item in value.items():
            check_numbers(f"{key}.{name}", item, finite)
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            check_numbers(f"{key}[{i}]", item, finite)
    elif isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_INT:
        raise UserError(f"config key '{key}': {value} is too large (at most {MAX_INT})")
    elif isinstance(value, float) and finite and not math.isfinite(value):
        raise UserError(f"config key '{key}': expected a finite number, got {value}")


def check_schema(prefix: str, values: Any, schema: type) -> None:
    """Plain keys against a typed schema: unknown keys, missing values, types and ranges."""
    if not isinstance(values, dict):
        raise UserError(f"config key '{prefix}': expected a mapping, got {values!r}")
    names = [f.name for f in dataclasses.fields(schema)]
    full = f"{prefix}." if prefix else ""
    for name, value in values.items():
        if name not in names:
            raise UserError(f"unknown config key '{full}{name}'{did_you_mean(name, names, full)}")
        if value == MISSING:
            raise UserError(f"missing required value '{full}{name}' (set it with {full}{name}=...)")
    try:
        checked = TypeAdapter(schema).validate_python(values)
    except ValidationError as exc:
        raise UserError(_describe(exc, full, values)) from None
    for name, value in values.items():
        # getattr: the validated field of that key
        _refuse_quoted(f"{full}{name}", value, getattr(checked, name))


def check_node(key: str, node: Any) -> None:
    """A `_target_` node: the target imports, its keys are parameters, its values fit their hints."""
    if not isinstance(node, dict) or "_target_" not in node:
        for name, value in (node or {}).items() if isinstance(node, dict) else ():
            if isinstance(value, dict) and "_target_" in value:
                check_node(f"{key}.{name}", value)
        return
    target = node["_target_"]
    obj = locate(f"{key}._target_", target)
    params, open_kwargs = _signature(obj)
    # getattr: a target may be any callable, some without these names
    tighter = LIBRARY_HINTS.get(f"{getattr(obj, '__module__', '')}.{getattr(obj, '__qualname__', '')}", {})
    params.update({name: hint for name, hint in tighter.items() if name in params})
    for name, value in node.items():
        if name.startswith("_") and name.endswith("_"):
            continue
        full = f"{key}.{name}"
        if name not in params:
            if open_kwargs:
                continue
            raise UserError(f"unknown config key '{full}'{did_you_mean(name, params, f'{key}.')} "
                            f"({target} takes: {', '.join(params)})")
        if value == MISSING:
            raise UserError(f"missing required value '{full}' (set it with {full}=...)")
        if isinstance(value, dict) and "_target_" in value:
            check_node(full, value)
        elif isinstance(value, list) and any(isinstance(v, dict) and "_target_" in v for v in value):
            for i, item in enumerate(value):
                check_node(f"{full}[{i}]", item)
        else:
            check_value(full, value, params[name])


def check_value(key: str, value: Any, hint: Any) -> None:
    """One value against one type hint (ranges included when the hint is `Annotated`)."""
    adapter = _adapter(hint)
    if adapter is None:
        return
    try:
        checked = adapter.validate_python(value)
    except ValidationError as exc:
        raise UserError(_describe(exc, "", value, key)) from None
    _refuse_quoted(key, value, checked)


def _refuse_quoted(key: str, value: Any, checked: Any) -> None:
    """Refuse a string where a number or a boolean goes (`overwrite="'false'"`, `${oc.env:X}`): the lax
    check reads it as one, but the code would get the string itself, and 'false' is true."""
    if isinstance(value, str) and isinstance(checked, (bool, int, float)):
        kind = "a boolean" if isinstance(checked, bool) else "a number"
        raise UserError(f"config key '{key}': expected {kind}, got the string {value!r} (drop its quotes; "
                        "an environment variable: ${oc.decode:${oc.env:NAME}})")
    if isinstance(value, (list, tuple)) and isinstance(checked, (list, tuple)) and len(value) == len(checked):
        for i, (item, done) in enumerate(zip(value, checked)):
            _refuse_quoted(f"{key}[{i}]", item, done)
    elif isinstance(value, dict) and isinstance(checked, dict):
        for name, item in value.items():
            _refuse_quoted(f"{key}.{name}", item, checked.get(name))


def locate(key: str, target: str) -> Any:
    from lmforge.compat import hydra as hydra_compat

    try:
        return hydra_compat.locate(target)
    except Exception as exc:  # noqa: BLE001 - any import failure is the user's bad _target_
        cause = exc.__cause__ or exc
        reason = f"{type(cause).__name__}: {str(cause).splitlines()[0]}"
        raise UserError(f"config key '{key}': cannot import '{target}' ({reason})") from exc


def _describe(exc: ValidationError, prefix: str, values: Any, key: str = "") -> str:
    """The first pydantic error as `config key 'x.y': <what is wrong>, got <value>`."""
    error = exc.errors()[0]
    # The location holds list indices, and the tags of union members tried (float, literal[...]), left out.
    field, *inner = error["loc"] if not key else ("", *error["loc"])
    full = (key or f"{prefix}{field}") + "".join(f"[{part}]" for part in inner if isinstance(part, int))
    message = error["msg"][0].lower() + error["msg"][1:].split(", unable to")[0].split(", got ")[0]
    message = message.replace("input should be", "expected").replace("Input should be", "expected")
    message = message.removeprefix("value error, ")  # a validator's own message
    close = ""
    literals = [e for e in exc.errors() if e["type"] == "literal_error"]
    if literals and len(literals) == len(exc.errors()):  # a choice, maybe among several lists (a union)
        expected = ", ".join(e["ctx"]["expected"].replace(" or ", ", ") for e in literals)
        if len(literals) > 1:
            message = f"expected one of {expected}"
        if isinstance(error["input"], str):
            close = did_you_mean(error["input"], [o.strip(" '") for o in expected.split(",")])
    return f"config key '{full}': {message}, got {error['input']!r}{close}"


def _adapter(hint: Any) -> TypeAdapter | None:
    """A lax pydantic validator for `hint`, or None when the hint cannot be checked (left to the code)."""
    if hint is inspect.Parameter.empty or hint is Any or isinstance(hint, (str, typing.ForwardRef)):
        return None
    try:
        return _cached_adapter(hint)
    except TypeError:  # an unhashable hint (e.g. Annotated with a Field): build it uncached
        return _cached_adapter.__wrapped__(hint)


@functools.lru_cache(maxsize=None)
def _cached_adapter(hint: Any) -> TypeAdapter | None:
    try:
        return TypeAdapter(hint, config=_LAX)
    except Exception:  # noqa: BLE001 - an exotic annotation: not checked here, the target checks it
        return None


def _signature(obj: Any) -> tuple[dict[str, Any], bool]:
    """(parameter -> type hint, whether it takes **kwargs) of a class or callable."""
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return {}, True
    func = obj.__init__ if inspect.isclass(obj) else obj
    try:
        hints = typing.get_type_hints(func, include_extras=True)
    except Exception:  # noqa: BLE001 - unresolvable annotations are simply not checked
        hints = {}
    params = {p.name: hints.get(p.name, inspect.Parameter.empty) for p in sig.parameters.values()
              if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    return params, any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())
