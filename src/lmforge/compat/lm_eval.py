"""lm-evaluation-harness's private names that lmforge relies on, each behind one small function."""

from __future__ import annotations

from pathlib import Path
from typing import Any

DISTRIBUTION = "lm-eval"
CHECKED = ">=0.4.13,<0.5"


def load_task_yaml(path: str | Path) -> dict[str, Any]:
    """A task YAML as lm-eval reads it (its `!function` tags resolved, `include`s merged)."""
    from lm_eval.tasks._yaml_loader import load_yaml

    return load_yaml(str(path), resolve_func=True)
