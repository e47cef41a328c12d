"""Training speed in tokens per second, and model FLOPs utilisation (MFU) against the device's peak."""

from __future__ import annotations

import time
from collections import deque
from typing import Optional

import lightning as L
import torch
from torch import nn

from lmforge.loggers.cadence import OncePerWrittenStep
from lmforge.models.contract import config_size, input_embeddings, output_layer
from lmforge.modules.base import task_model
from lmforge.peak_flops import device_peak_flops


def matmul_params(model: nn.Module) -> int:
    """N of the 6N rule: parameters used in matmuls, i.e. all but embedding lookups (a tied LM head,
    which is the embedding table used as a matmul, counts)."""
    params = {id(p): p for p in model.parameters()}
    for module in model.modules():
        if isinstance(module, nn.Embedding):
            params.pop(id(module.weight), None)
    head = output_layer(model)
    if head is not None:
        params[id(head.weight)] = head.weight
    return sum(p.numel() for p in params.values())


def flops_per_token(model: nn.Module, seq_len: int, params: Optional[int] = None) -> float:
    """Training FLOPs per token (forward + backward): 6N + 12 * n_layer * n_embd * seq_len (attention).
    `params`: N counted earlier, when the model may be sharded by now (FSDP leaves each rank a shard)."""
    n_layer, n_embd = config_size(model, "num_hidden_layers"), config_size(model, "hidden_size")
    return 6 * (matmul_params(model) if params is None else params) + 12 * n_layer * n_embd * seq_len


class Throughput(L.Callback):
    """Logs `train/tokens_per_sec` (all ranks together) over a sliding window of `window` batches,
    after `warmup_steps` batches, and `train/mfu`: the model's training FLOPs per second (`flops_per_token`)
    over the peak of the devices, `peak_flops` per device when given, else the datasheet bf16 peak of a
    known GPU, else a peak measured once per process before the first step (fp32 matmul on a CPU). Only
    for models that read token ids (an embedding table): the 6N-per-token count means nothing per pixel.

    Tokens are `input_ids.numel()` per batch times the world size (padding included). Validation
    time is excluded: the window restarts after each validation loop. The rate is logged only on the
    steps the loggers write (every `trainer.log_every_n_steps`): a `log` call costs more than the rest.

    Not Lightning's `ThroughputMonitor`: that one needs a `batch_size_fn`/`length_fn` per task, logs
    its own metric names on every batch (a `log` call costs more than a step at our smallest shapes) and does
    not restart its window after validation.
    """

    def __init__(self, window: int = 20, warmup_steps: int = 5, peak_flops: Optional[float] = None):
        self.window = max(1, window)
        self.warmup_steps = warmup_steps
        self.peak_flops = peak_flops
        self._times: deque = deque(maxlen=self.window + 1)
        self._tokens: deque = deque(maxlen=self.window + 1)
        self._batches = 0
        self._flops_per_token: Optional[float] = None
        self._peak: Optional[float] = None  # per device, known once training starts (None: no MFU)
        self._matmul_params: Optional[int] = None
        self._reads_tokens = False
        self._due = OncePerWrittenStep()

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # Counted before the strategy wraps the model: under FSDP each rank then holds a shard of each parameter.
        self._matmul_params = matmul_params(task_model(pl_module))
        self._reads_tokens = input_embeddings(task_model(pl_module)) is not None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Before the first step, on the device the model is on: a measurement takes a few hundred ms.
        if self._reads_tokens:
            self._peak = self.peak_flops or device_peak_flops(pl_module.device)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._batches += 1
        if self._batches <= self.warmup_steps:
            return
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)  # time the work, not the kernel launches
        input_ids = batch["input_ids"] if isinstance(batch, dict) else batch[0]
        self._times.append(time.perf_counter())
        self._tokens.append(input_ids.numel() * trainer.world_size)
        step = trainer.global_step  # optimizer steps: log once per step, on the steps the loggers write
        if len(self._times) < 2 or not self._due(trainer, step):
            return
        # Tokens of the batches that ended after the first timestamp, over the time since it.
        tokens_per_sec = sum(list(self._tokens)[1:]) / max(self._times[-1] - self._times[0], 1e-9)
        pl_module.log("train/tokens_per_sec", tokens_per_sec, on_step=True, on_epoch=False)
        peak = self._peak
        if peak:
            if self._flops_per_token is None:
                self._flops_per_token = flops_per_token(task_model(pl_module), input_ids.shape[-1],
                                                        self._matmul_params)
            mfu = self._flops_per_token * tokens_per_sec / (peak * trainer.world_size)
            pl_module.log("train/mfu", mfu, on_step=True, on_epoch=False)

    def on_validation_end(self, trainer, pl_module) -> None:
        self._times.clear()
        self._tokens.clear()
