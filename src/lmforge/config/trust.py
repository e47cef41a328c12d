"""Configs read back from a run directory or a checkpoint may only instantiate trusted targets.

A saved config is data someone else may have written: building it must not import and call
arbitrary code. Allowed: the libraries lmforge builds on, and every `_target_` the config groups
in conf/ ship.
"""

from __future__ import annotations

import functools
import re
from typing import Any

from lmforge.config import conf_dir
from lmforge.errors import UserError

TRUSTED_PACKAGES = ("lmforge", "torch", "lightning", "transformers", "torchmetrics", "peft")


@functools.lru_cache(maxsize=1)
def shipped_targets() -> frozenset[str]:
    """Every `_target_` written in the config groups of conf/."""
    found = set()
    for path in conf_dir().rglob("*.yaml"):
        found.update(re.findall(r"_target_:\s*([\w.]+)", path.read_text(encoding="utf-8")))
    return frozenset(found)


def check_trusted(config: Any, source: str, key: str = "") -> None:
    """Raise a one-line UserError naming `source` and the key of the first untrusted `_target_`."""
    if isinstance(config, dict):
        target = config.get("_target_")
        if target is not None:
            package = str(target).split(".")[0]
            if package not in TRUSTED_PACKAGES and target not in shipped_targets():
                raise UserError(f"{source}: config key '{key}._target_' = '{target}' is not a trusted target "
                                f"(allowed: {', '.join(TRUSTED_PACKAGES)} and lmforge's presets); refusing to build it")
        for name, value in config.items():
            check_trusted(value, source, f"{key}.{name}" if key else str(name))
    elif isinstance(config, list):
        for i, value in enumerate(config):
            check_trusted(value, source, f"{key}[{i}]")
