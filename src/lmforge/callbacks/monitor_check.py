"""Refuse a monitored metric that the module never logs, at the sanity check before training.

ModelCheckpoint and EarlyStopping find out only at the end of the first epoch (or validation), after
all that training; the sanity check runs the validation loop first, so its metrics are known then.
"""

from __future__ import annotations

import lightning as L

from lmforge.config.validate import did_you_mean
from lmforge.errors import UserError


class CheckMonitors(L.Callback):
    """After the sanity check: each callback's `monitor` of a stage the sanity check logged (val/...)
    must be among the metrics it logged. `keys` maps a monitored metric to the config key that set it."""

    def __init__(self, keys: dict[str, str]) -> None:
        self.keys = keys

    @classmethod
    def from_config(cls, config: dict) -> "CheckMonitors":
        keys = {}
        for name, node in (config.get("callbacks") or {}).items():
            monitor = (node or {}).get("monitor")
            if isinstance(monitor, str):
                keys.setdefault(monitor, "monitor" if monitor == config.get("monitor") else f"callbacks.{name}.monitor")
        return cls(keys)

    def on_sanity_check_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        logged = sorted(trainer.callback_metrics)
        stages = {name.split("/")[0] for name in logged if "/" in name}
        for callback in trainer.callbacks:
            monitor = getattr(callback, "monitor", None)  # getattr: only callbacks that watch a metric have one
            if not isinstance(monitor, str) or monitor in logged or monitor.split("/")[0] not in stages:
                continue
            key = self.keys.get(monitor, f"{type(callback).__name__}.monitor")
            raise UserError(f"{key}={monitor}: the module logs no such metric{did_you_mean(monitor, logged)}; "
                            f"it logs: {', '.join(logged)}")
