"""The search space of a sweep: Hydra override syntax to Optuna distributions, and back.

`choice(a, b)` (or `a,b`) is categorical; `range(1, 8, 2)` over ints is an int distribution whose
high end is the range's last value (Python's exclusive stop, as Hydra's own sweeps use it);
`interval(a, b)` is a float distribution, `int(interval(a, b))` an int one, and `tag(log, ...)`
samples either on a log scale. A plain `key=value` fixes the key for every trial.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import IntervalSweep, Override, RangeSweep, Transformer
from hydra.errors import OverrideParseException
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from lmforge.errors import UserError


class SearchSpace:
    """Distributions by parameter name, and the overrides that hand a sampled point to a job."""

    def __init__(self) -> None:
        self.distributions: dict[str, BaseDistribution] = {}
        self._keys: dict[str, str] = {}  # name -> key as written (with a +/++ prefix, if any)
        self._choice_texts: dict[str, list[str]] = {}  # categorical name -> override text per choice
        self._fixed: dict[str, str] = {}  # name -> the override, as written

    @classmethod
    def parse(cls, params: Mapping[str, str], arguments: Iterable[str]) -> "SearchSpace":
        """`params` of the sweeper config, then the command line's overrides (which win)."""
        lines = [f"{key}={value}" for key, value in params.items()] + list(arguments)
        try:
            overrides = OverridesParser.create().parse_overrides(lines)
        except OverrideParseException as exc:
            raise UserError(f"hydra.sweeper.params: {str(exc).splitlines()[0]}") from exc
        space = cls()
        for override in overrides:
            space._add(override)
        return space

    def _add(self, override: Override) -> None:
        name = override.get_key_element().lstrip("+~")
        for table in (self.distributions, self._keys, self._choice_texts, self._fixed):
            table.pop(name, None)
        if not override.is_sweep_override():
            self._fixed[name] = override.input_line
            return
        self._keys[name] = override.get_key_element()
        try:
            self.distributions[name] = self._distribution(name, override)
        except ValueError as exc:  # Optuna's check of the bounds (low > high, log of <= 0...)
            raise UserError(f"sweep '{override.input_line}': {exc}") from exc

    def _distribution(self, name: str, override: Override) -> BaseDistribution:
        value = override.value()
        if override.is_choice_sweep() or (isinstance(value, RangeSweep) and not _int_range(value)):
            items = _choices(override)
            if not items:
                raise UserError(f"sweep '{override.input_line}' has no values")
            self._choice_texts[name] = [Transformer.str(x) for x in items]
            return CategoricalDistribution([Transformer.encode(x) for x in items])
        if isinstance(value, RangeSweep):
            values = range(int(value.start), int(value.stop), int(value.step))
            if not values:
                raise UserError(f"sweep '{override.input_line}' has no values")
            return IntDistribution(values[0], values[-1], step=values.step)
        if isinstance(value, IntervalSweep):
            log = "log" in value.tags
            if isinstance(value.start, int) and isinstance(value.end, int):
                return IntDistribution(value.start, value.end, log=log)
            return FloatDistribution(float(value.start), float(value.end), log=log)
        raise UserError(f"sweep '{override.input_line}': an Optuna search takes choice(...), range(...) "
                        f"or interval(...) (with int(...) or tag(log, ...))")

    def overrides(self, params: Mapping[str, Any]) -> list[str]:
        """The job's overrides for a sampled point: one per searched key, then the fixed ones."""
        return [self._override(name, params[name]) for name in self.distributions] + list(self._fixed.values())

    def describe(self, params: Mapping[str, Any]) -> str:
        """`key=value ...` of the given parameters (for one-line reports)."""
        return " ".join(self._override(name, value) for name, value in params.items())

    def _override(self, name: str, value: Any) -> str:
        """`key=value` with a categorical choice written as it was given (a list stays a list)."""
        distribution = self.distributions.get(name)
        if name in self._choice_texts and value in distribution.choices:
            return f"{self._keys[name]}={self._choice_texts[name][distribution.to_internal_repr(value)]}"
        return f"{self._keys.get(name, name)}={Transformer.str(value)}"


def _int_range(value: RangeSweep) -> bool:
    return all(isinstance(x, int) for x in (value.start, value.stop, value.step)) and value.step > 0


def _choices(override: Override) -> list[Any]:
    """The values of a choice or range sweep in a stable order (a shuffle is the sampler's job):
    a continued study must see the very same categorical distribution."""
    value = override.value()
    if isinstance(value, RangeSweep) and value.shuffle:
        return sorted(override.sweep_iterator(transformer=Transformer.identity))
    if isinstance(value, RangeSweep):
        return list(override.sweep_iterator(transformer=Transformer.identity))
    return list(value.list)
