"""Seeds as pure functions of where a run is (seed, rank, step, sample index), so a resumed run draws
exactly what the uninterrupted one did."""

from __future__ import annotations

import numpy as np

_GOLDEN = 0x9E3779B97F4A7C15
_MASK = 0xFFFFFFFFFFFFFFFF


def splitmix64(x):
    """splitmix64's finaliser, on a Python int or a uint64 array alike: nearby inputs give unrelated outputs."""
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def sample_seeds(seed: int, indices: np.ndarray) -> np.ndarray:
    """One well-spread 64-bit number per sample index of the stream seeded by `seed` (uint64 wraps)."""
    return splitmix64(np.uint64(seed * _GOLDEN & _MASK) + np.asarray(indices, dtype=np.uint64))


def mix(*values: int) -> int:
    """Mix integers into one well-spread 63-bit seed (a splitmix64 step per value)."""
    x = 0
    for value in values:
        x = splitmix64((x * _GOLDEN + int(value) + 1) & _MASK)
    return x >> 1
