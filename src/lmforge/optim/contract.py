"""What the modules and builders need of the config's optimizer: a factory (`_partial_: true`) that
takes the parameter groups, whose fixed keywords are readable, and whether it needs whole matrices."""

from __future__ import annotations

import functools
import inspect
from typing import Any, Optional

from torch.optim import Optimizer

from lmforge.errors import UserError


class WholeMatrixOptimizer(Optimizer):
    """An optimizer that updates each weight matrix as a whole (Muon orthogonalises it): it cannot run
    on the shards FSDP leaves each rank."""


def check_optimizer_spec(factory: Any, key: str = "optimizer") -> functools.partial:
    """`factory` itself when it is a `functools.partial` (what `_partial_: true` builds); else one line."""
    if not isinstance(factory, functools.partial):
        raise UserError(f"config section '{key}': expected a factory of the parameter groups "
                        f"(set {key}._partial_=true), got a {type(factory).__name__}")
    return factory


def default_weight_decay(factory: Optional[functools.partial]) -> float:
    """The weight decay the config gives the optimizer (0 without one): the modules apply it per group."""
    return float(factory.keywords.get("weight_decay", 0.0)) if factory is not None else 0.0


def needs_whole_matrices(factory: functools.partial) -> bool:
    """Whether the optimizer of `factory` updates whole weight matrices (see WholeMatrixOptimizer)."""
    return inspect.isclass(factory.func) and issubclass(factory.func, WholeMatrixOptimizer)
