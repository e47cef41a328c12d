"""Optional dependencies: import one, or stop with the one line that names the extra to install."""

from __future__ import annotations

import importlib
from types import ModuleType

from lmforge.errors import UserError


def require(module: str, extra: str, needed_for: str) -> ModuleType:
    """Import `module`; when it is missing, a UserError naming `pip install 'lmforge[extra]'`."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise UserError(f"{needed_for} needs {module.split('.')[0]}: pip install 'lmforge[{extra}]'") from exc
