"""What every lmforge LightningModule shares, and what it offers the runner (declared once here):
optimizer factories, the non-finite loss policy, `test_metrics` and `on_run_end` for outputs beyond
Lightning's logged metrics."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Callable, Literal, Optional

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import nn
from torch.distributed.fsdp import FullyShardedDataParallel

from lmforge.compat import lightning as lightning_compat
from lmforge.errors import RunFailed
from lmforge.optim.budget import Budget


def task_model(pl_module: L.LightningModule) -> nn.Module:
    """The model a LightningModule trains: an lmforge module's `model`, else the module itself."""
    return pl_module.model if isinstance(pl_module, TaskModule) else pl_module


class TaskModule(L.LightningModule):
    """Holds the model and builds the optimizer/scheduler from the config's `_partial_` factories.

    Subclasses implement `training_loss(batch)` (the loss of a training batch, its metrics logged);
    the shared `training_step` stops the run on a NaN/Inf loss, naming the step, or skips that
    batch with `nan_policy=skip` (counted in `train/skipped_batches`)."""

    def __init__(self, model: nn.Module, optimizer: Optional[Callable] = None,
                 scheduler: Optional[Callable] = None, nan_policy: Literal["stop", "skip"] = "stop"):
        super().__init__()
        self.model = model
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.nan_policy = nan_policy
        self.skipped_batches = 0
        self._built_ndim: dict[int, int] = {}  # id(parameter) -> its dims before any strategy wrapped it

    def __setattr__(self, name: str, value: Any) -> None:
        # Lightning sets this before and after each hook, ~50 times a step: nn.Module's checks take 3.5 us
        # a time, a plain attribute 0.2 us (it is no parameter, buffer or submodule).
        if name == lightning_compat.HOOK_NAME_ATTRIBUTE:
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    def setup(self, stage: str) -> None:
        # Before the strategy wraps the model: under FSDP the optimizer is made afterwards, when each
        # parameter is a flat 1-D view of this rank's shard.
        self._built_ndim = {id(p): p.ndim for p in self.parameters()}

    def is_matrix(self, param: nn.Parameter) -> bool:
        """Whether a parameter is a weight matrix (2-D or more) as built, also once FSDP has flattened it."""
        return self._built_ndim.get(id(param), param.ndim) >= 2

    def training_loss(self, batch: Any) -> torch.Tensor:
        raise NotImplementedError

    def training_step(self, batch: Any, batch_idx: int) -> Optional[torch.Tensor]:
        loss = self.training_loss(batch)
        bad = not torch.isfinite(loss).all()
        if self.trainer.world_size > 1:  # every rank must skip or stop together
            bad = self.trainer.strategy.reduce(torch.tensor(float(bad), device=loss.device), reduce_op="sum") > 0
        if not bad:
            return loss
        step = self.trainer.global_step
        if self.nan_policy == "stop":
            raise RunFailed(f"train/loss is {loss.item()} at step {step} (epoch {self.current_epoch}, batch "
                            f"{batch_idx}): lower optimizer.lr, set trainer.gradient_clip_val, or set "
                            "nan_policy=skip to skip such batches")
        self.skipped_batches += 1
        self.log("train/skipped_batches", float(self.skipped_batches), on_step=True, on_epoch=False)
        return None  # Lightning skips the backward pass and the optimizer step

    # Lightning inspects this signature at every step (does it take batch_idx?): precomputed, that is 7 us, not 33.
    training_step.__signature__ = inspect.signature(training_step)

    def configure_gradient_clipping(self, optimizer: torch.optim.Optimizer, gradient_clip_val: Optional[float] = None,
                                    gradient_clip_algorithm: Optional[str] = None) -> None:
        """Lightning's clipping, except by norm under FSDP: there it goes through the sharded model's own
        `clip_grad_norm_`, the norm over all shards (Lightning's FSDP precision refuses norm clipping,
        Lightning-AI/pytorch-lightning#19235: the presets that clip could not train under trainer=fsdp)."""
        from lightning.pytorch.plugins.precision import MixedPrecision

        model = self.trainer.model
        if gradient_clip_val and gradient_clip_algorithm in (None, "norm") and isinstance(model, FullyShardedDataParallel):
            model.clip_grad_norm_(gradient_clip_val)
            return
        plugin = self.trainer.precision_plugin
        if gradient_clip_val and isinstance(plugin, MixedPrecision) and plugin.scaler is None:
            # bf16-mixed has no loss scaler, so the gradients are true ones; Lightning's refusal to clip for a
            # fused optimizer (which unscales inside its step) is for 16-mixed: clip here, keep the fused step.
            params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
            if gradient_clip_algorithm == "value":
                torch.nn.utils.clip_grad_value_(params, gradient_clip_val)
            else:
                torch.nn.utils.clip_grad_norm_(params, gradient_clip_val)
            return
        super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)

    def on_run_end(self, run_dir: Path, datamodule: Any) -> None:
        """Write outputs beyond metrics.json into the run directory (e.g. predictions); rank 0 only."""

    def test_metrics(self) -> dict[str, float]:
        """Metrics of the last test that were not logged through Lightning (per-class scores: kept out of
        its results table and the loggers' curves); the runner adds them to metrics.json."""
        return {}

    def parameter_groups(self) -> list[dict[str, Any]]:
        """Trainable parameters; subclasses split them (no weight decay on norms, head lr, ...)."""
        return [{"params": [p for p in self.parameters() if p.requires_grad]}]

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(self.parameter_groups())
        # getattr: a private flag only torch's fused optimizers set (unscale inside their step)
        if getattr(optimizer, "_step_supports_amp_scaling", False) and self._clips_scaled_gradients():
            # 16-mixed scales the loss, and a fused optimizer unscales the gradients inside its step: they
            # cannot be clipped before it. The unfused optimizer computes the same update.
            rank_zero_info("optimizer.fused=false: trainer.precision=16-mixed with trainer.gradient_clip_val "
                           "needs the unfused optimizer")
            optimizer = self.optimizer_factory(self.parameter_groups(), fused=False)
        if self.scheduler_factory is None:
            return optimizer
        # The schedule is laid out over the run's budget: max_steps and/or max_time, whichever ends first.
        scheduler = self.scheduler_factory(optimizer, budget=Budget.from_trainer(self.trainer))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def _clips_scaled_gradients(self) -> bool:
        from lightning.pytorch.plugins.precision import MixedPrecision

        plugin = self.trainer.precision_plugin
        return isinstance(plugin, MixedPrecision) and plugin.scaler is not None and bool(self.trainer.gradient_clip_val)
