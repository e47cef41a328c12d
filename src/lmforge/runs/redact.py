"""Keep secrets out of what a run saves: API keys and tokens from the environment are masked.

A value of an environment variable whose name says it is a secret (`*KEY*`, `*TOKEN*`, `*SECRET*`,
`*PASSWORD*`), wherever it appears in a config, a command line or a log line, becomes `***`.
"""

from __future__ import annotations

import os
import re
from typing import Any

_SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|PASSWD", re.IGNORECASE)
MASK = "***"


def secrets() -> list[str]:
    """The secret values of this process's environment, longest first (8 characters or more)."""
    found = {v for k, v in os.environ.items() if _SECRET_NAME.search(k) and len(v) >= 8}
    return sorted(found, key=len, reverse=True)


def redact(value: Any, hidden: list[str] | None = None) -> Any:
    """`value` (str, or nested dicts/lists/tuples of them) with every secret replaced by `***`."""
    hidden = secrets() if hidden is None else hidden
    if not hidden:
        return value
    if isinstance(value, str):
        for secret in hidden:
            value = value.replace(secret, MASK)
        return value
    if isinstance(value, dict):
        return {k: redact(v, hidden) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact(v, hidden) for v in value)
    return value
