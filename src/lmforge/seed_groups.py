"""Runs that differ only in `seed` as one group: its mean, 95 % confidence interval and n on a metric,
and whether the best group is better than the runner-up (Welch's t-test), for the sweep summary and
`lmforge report`.

A sweep without repeated seeds (every group of one run) has no groups: the callers keep ranking single
runs. The best group is named only when its difference from the runner-up is significant at `alpha`.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional

ALPHA = 0.05  # the sweep summary's significance level (the report's: `alpha` in conf/report.yaml)
CONFIDENCE = 0.95
SEED_KEYS = ("seed",)


@dataclass
class Group:
    """The runs of one configuration, every seed: `label` is what sets them apart from the other groups."""

    label: str
    values: list[float]
    members: list[Any] = field(default_factory=list)  # the jobs or runs, in the order given

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return sum(self.values) / self.n

    @property
    def ci(self) -> Optional[tuple[float, float]]:
        """The 95 % Student-t confidence interval of the mean; None for a single run."""
        if self.n < 2:
            return None
        from scipy import stats

        sd = math.sqrt(sum((v - self.mean) ** 2 for v in self.values) / (self.n - 1))
        half = stats.t.ppf(0.5 + CONFIDENCE / 2, self.n - 1) * sd / math.sqrt(self.n)
        return (self.mean - half, self.mean + half)

    def describe(self) -> str:
        """`0.9123 ± 0.0101 (95% CI 0.9022..0.9224, n=3)`; a single run: `0.9123 (n=1)`."""
        if self.ci is None:
            return f"{self.mean:.4g} (n={self.n})"
        low, high = self.ci
        return f"{self.mean:.4g} ± {(high - low) / 2:.2g} (95% CI {low:.4g}..{high:.4g}, n={self.n})"

    def as_dict(self) -> dict:
        low, high = self.ci or (None, None)
        return {"group": self.label, "n": self.n, "mean": self.mean, "ci_low": low, "ci_high": high}


@dataclass
class Comparison:
    """Groups best first on `metric` in `direction`, and the verdict on the top two."""

    metric: str
    direction: Optional[str]  # "min" | "max" | None: no ranking, no best
    groups: list[Group]
    alpha: float
    p_value: Optional[float]  # Welch's t-test of the top two groups; None where it cannot be computed

    @property
    def best(self) -> Optional[Group]:
        """The top group, when it is better than the runner-up at `alpha`."""
        significant = self.p_value is not None and self.p_value < self.alpha
        return self.groups[0] if self.direction and len(self.groups) > 1 and significant else None

    def verdict(self) -> str:
        """One line: the best group, or that the top groups do not differ significantly (and why)."""
        if not self.direction:
            return f"groups not ranked: cannot tell whether lower or higher {self.metric} is better"
        if len(self.groups) < 2:
            return f"one group ({self.groups[0].label}): nothing to compare"
        top, second = self.groups[0], self.groups[1]
        if self.p_value is None and min(top.n, second.n) < 2:
            return (f"no best group: a t-test needs 2 runs in each of the top groups ({top.label}: n={top.n}, "
                    f"{second.label}: n={second.n})")
        if self.p_value is None and top.mean == second.mean:
            return (f"no best group: the top groups {top.label} and {second.label} do not differ "
                    f"(every run: {self.metric}={top.mean:.4g})")
        if self.p_value is None:
            return (f"no best group: {top.label} and {second.label} do not vary between seeds, so no t-test "
                    f"({self.metric} {top.mean:.4g} vs {second.mean:.4g})")
        if self.best:
            return (f"best: {top.label} ({self.metric} {top.mean:.4g} vs {second.mean:.4g} for {second.label}; "
                    f"Welch t-test p={self.p_value:.3g} < alpha={self.alpha:g})")
        return (f"no best group: the top groups {top.label} and {second.label} do not differ significantly "
                f"(Welch t-test p={self.p_value:.3g} >= alpha={self.alpha:g})")

    def as_dict(self) -> dict:
        return {"metric": self.metric, "direction": self.direction, "alpha": self.alpha,
                "p_value": self.p_value, "best": self.best.label if self.best else None,
                "verdict": self.verdict(), "groups": [g.as_dict() for g in self.groups]}


def welch_p_value(a: list[float], b: list[float]) -> Optional[float]:
    """The two-sided p-value of Welch's t-test (unequal variances); None with fewer than 2 values in
    either, or when it is undefined (no variance in either)."""
    if len(a) < 2 or len(b) < 2:
        return None
    from scipy import stats

    if max(a) == min(a) and max(b) == min(b):
        return None  # no spread in either: the statistic is undefined
    with warnings.catch_warnings():  # scipy's note on nearly equal values: the p-value says it
        warnings.simplefilter("ignore", RuntimeWarning)
        p = float(stats.ttest_ind(a, b, equal_var=False).pvalue)
    return p if math.isfinite(p) else None


def group_label(settings: dict[str, str]) -> str:
    """The settings that set a group apart, seed left out: `model.activation=relu optimizer.lr=0.01`."""
    return " ".join(f"{k}={v}" for k, v in settings.items() if k not in SEED_KEYS) or "(all runs)"


def compare(items: Iterable[tuple[dict[str, str], float, Any]], metric: str, direction: Optional[str],
            alpha: float = ALPHA) -> Optional[Comparison]:
    """Groups of `(settings that differ between runs, value, member)` items by their settings other than
    the seed, best first, with the Welch p-value of the top two; None unless the seed is among the
    settings that differ and some group holds 2 runs or more (nothing to group)."""
    items = list(items)
    if not any(key in SEED_KEYS for settings, _, _ in items for key in settings):
        return None
    groups: dict[str, Group] = {}
    for settings, value, member in items:
        if value is None or not math.isfinite(value):
            continue
        group = groups.setdefault(group_label(settings), Group(group_label(settings), []))
        group.values.append(float(value))
        group.members.append(member)
    if not any(group.n > 1 for group in groups.values()):
        return None
    ranked = list(groups.values())
    if direction:
        ranked.sort(key=lambda g: g.mean, reverse=direction == "max")
    p_value = welch_p_value(ranked[0].values, ranked[1].values) if len(ranked) > 1 else None
    return Comparison(metric, direction, ranked, alpha, p_value)


def differing(settings: list[dict[str, str]]) -> list[dict[str, str]]:
    """Each run's settings limited to the keys whose values differ between runs (seed included)."""
    keys = dict.fromkeys(k for s in settings for k in s)
    varying = [k for k in keys if len({s.get(k) for s in settings}) > 1]
    return [{k: s[k] for k in varying if k in s} for s in settings]
