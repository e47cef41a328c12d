"""File paths in a config made absolute, so a saved run means the same files from any directory."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

PATH_KEY = re.compile(r"(^|_)(file|dir|path|paths|root|annotations|images)$")


def absolute_paths(node: Any, base: str | Path) -> Any:
    """A copy of `node` where the values of path-like keys (`*_file`, `*_dir`, `path`, `paths`, `root`,
    `*annotations`, `*images`: COCO files and image folders)
    that are relative paths are joined to `base` (hub names, `hf:`/`pkg:` sources and globs that match
    nothing under `base` stay as they are)."""
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if isinstance(value, dict):
            out[key] = absolute_paths(value, base)
        elif PATH_KEY.search(str(key)) and isinstance(value, (str, list)):
            out[key] = [_absolute(v, base) for v in value] if isinstance(value, list) else _absolute(value, base)
        else:
            out[key] = value
    return out


def _absolute(value: Any, base: str | Path) -> Any:
    if not isinstance(value, str) or not value or ":" in value.split("/")[0] or os.path.isabs(value):
        return value
    if value.startswith("~"):
        return os.path.expanduser(value)
    candidate = Path(base) / value
    if candidate.exists() or any(ch in value for ch in "*?[") and list(Path(base).glob(value)):
        return str(candidate)
    return value
