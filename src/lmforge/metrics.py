"""A run's final metrics as plain numbers, the names of per-class scores, and the value a sweeper optimizes."""

from __future__ import annotations

import logging
import math
import re
from typing import Any, Optional

from lmforge.errors import RunFailed, UserError

log = logging.getLogger(__name__)

# A classifier's scores of each class at test: `test/<score>/<class>` in metrics.json.
PER_CLASS_SCORES = ("precision", "recall", "f1")
_PER_CLASS = re.compile(rf"^[^/]+/({'|'.join(PER_CLASS_SCORES)})/[^/]+$")


def per_class_key(stage: str, score: str, class_name: str) -> str:
    """`test/recall/<class>`; '/' and whitespace in a class name become '_' (they would split or blur it)."""
    name = re.sub(r"[\s/]+", "_", class_name.strip()) or "_"
    return f"{stage}/{score}/{name}"


def is_per_class(key: str) -> bool:
    """Whether a metric is the score of one class (left out of tables that list every metric by default)."""
    return bool(_PER_CLASS.match(key))


def final_metrics(logged: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """Lightning's callback metrics (tensors) as floats, those starting with `prefix`; non-finite ones
    are left out of metrics.json (JSON has no NaN) but reported by `optimized_value`."""
    out = {}
    for key, value in logged.items():
        if key.startswith(prefix):
            number = float(value.item() if hasattr(value, "item") else value)  # hasattr: a tensor or a number
            if math.isfinite(number):
                out[key] = number
    return out


def optimized_value(logged: dict[str, Any], name: Optional[str], required: bool) -> Optional[float]:
    """The value of `optimized_metric` for the sweeper: in a sweep (`required`) a missing or
    non-finite one fails the job; a single run only warns about it."""
    if not name:
        return None
    if name not in logged:
        message = f"optimized_metric '{name}' was not logged; logged: {', '.join(sorted(logged))}"
        if required:
            raise UserError(message)
        log.warning(message)
        return None
    value = logged[name]
    value = float(value.item() if hasattr(value, "item") else value)  # hasattr: a tensor or a number
    if not math.isfinite(value) and required:
        raise RunFailed(f"optimized_metric {name} is {value}")
    return value
