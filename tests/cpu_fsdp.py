"""Lightning's FSDP strategy on CPU processes (gloo), so tests can run `lmforge train trainer=fsdp` without a
GPU: `trainer.strategy._target_=cpu_fsdp.CPUFSDP` with tests/ on PYTHONPATH. Only what stops the stock
class on a CPU differs; the wrapping, sharding, state dicts and Lightning's loops are the real ones."""

from __future__ import annotations

import contextlib

import lightning.pytorch.strategies.fsdp as lightning_fsdp
import torch
from lightning.pytorch.strategies import FSDPStrategy
from torch.distributed.fsdp import (
    FullOptimStateDictConfig,
    FullStateDictConfig,
    FullyShardedDataParallel,
    StateDictType,
)


class CPUFSDP(FSDPStrategy):
    """Lightning refuses the stock class without a GPU (a subclass passes), and it wraps with the root
    device's index, None on a CPU, which torch's FSDP refuses: here the device is given."""

    def _setup_model(self, model: torch.nn.Module) -> torch.nn.Module:
        return FullyShardedDataParallel(module=model, cpu_offload=self.cpu_offload, sharding_strategy=self.sharding_strategy,
                                        mixed_precision=self.mixed_precision_config, device_id=torch.device("cpu"),
                                        **self.kwargs)


@contextlib.contextmanager
def _full_state_dict_in_place(module: torch.nn.Module, world_size: int, rank0_only: bool = True):
    """Lightning's full state dict context without offload_to_cpu: torch's FSDP segfaults offloading
    tensors that are on the CPU already."""
    with FullyShardedDataParallel.state_dict_type(module, StateDictType.FULL_STATE_DICT,
                                                  FullStateDictConfig(offload_to_cpu=False, rank0_only=rank0_only),
                                                  FullOptimStateDictConfig(offload_to_cpu=False, rank0_only=rank0_only)):
        yield


lightning_fsdp._get_full_state_dict_context = _full_state_dict_in_place
