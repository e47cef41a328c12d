"""The trainer's default profiler: none, at no cost per hook."""

from __future__ import annotations

import contextlib

from lightning.pytorch.profilers import PassThroughProfiler


class NoProfiler(PassThroughProfiler):
    """Profiles nothing, as Lightning's default does, without its cost: Lightning wraps every hook of the
    module and of each callback in `profiler.profile(name)`, ~200 times a training step with the default
    callbacks, and the default opens a generator context each time; this one returns one shared no-op
    context (benchmarks/README.md)."""

    _NOTHING = contextlib.nullcontext()

    def profile(self, action_name: str) -> contextlib.nullcontext:
        return self._NOTHING
