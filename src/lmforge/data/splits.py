"""The one way lmforge splits data: a hash decides, never random state or file order.

Two forms of the same idea. `split` orders the items of a list by a hash of (seed, key) and cuts
that order (the fine-tuning tables and the embedded stdlib tasks). `in_holdout` decides for item
`index` of a stream without knowing how many follow (pretraining corpora larger than memory).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")


def hash_key(seed: int, text: str) -> str:
    """The order key of a text: independent of where it sits in its file, changed by the seed."""
    return hashlib.sha256(f"{seed}\0{text}".encode("utf-8")).hexdigest()


def in_holdout(index: int, fraction: float) -> bool:
    """Whether item `index` of a stream is held out: a stable hash of the index below `fraction`."""
    h = int.from_bytes(hashlib.sha256(f"doc:{index}".encode()).digest()[:8], "big")
    return h / 2**64 < fraction


def split(
    items: Sequence[T],
    fractions: dict[str, float],
    seed: int,
    key: Callable[[T], str] = str,
    min_each: int = 0,
) -> dict[str, list[T]]:
    """{"train": [...], **{name: [...] for name in fractions}}, each in the order of `items`.

    The distinct keys are ordered by `hash_key(seed, key)`; the first round(n * fraction) go to
    the first name, the next ones to the second, and the rest to train. A split with a fraction
    above 0 gets at least `min_each` keys, train always keeps at least one, and items with the
    same key land in the same split.
    """
    keys = [key(item) for item in items]
    ordered = sorted(set(keys), key=lambda k: hash_key(seed, k))
    where: dict[str, str] = {}
    start = 0
    for name, fraction in fractions.items():
        n = int(len(ordered) * fraction + 0.5)
        if fraction > 0:
            n = max(n, min_each)
        n = max(0, min(n, len(ordered) - start - 1))
        for k in ordered[start : start + n]:
            where[k] = name
        start += n
    out: dict[str, list[T]] = {"train": [], **{name: [] for name in fractions}}
    for item, k in zip(items, keys):
        out[where.get(k, "train")].append(item)
    return out
