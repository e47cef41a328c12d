"""A device's peak FLOP/s, the denominator of model FLOPs utilisation (MFU): the datasheet's dense bf16
figure for known GPUs, otherwise measured once per process with a short timed matmul (fp32 on a CPU,
bf16 on an unknown GPU)."""

from __future__ import annotations

import functools
import time
from typing import Optional

import torch

# Dense bf16 peak FLOP/s per device, matched against torch.cuda.get_device_name().
DATASHEET_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12}

# The measurement: square matmuls of this size, repeated until this many seconds have passed (the best
# repetition counts: a busy machine only slows some of them down).
MEASURE_SIZE = {"cpu": 1024, "cuda": 4096}
MEASURE_SECONDS = 0.2
MEASURE_MAX_REPEATS = 50


def datasheet_flops(device: torch.device) -> Optional[float]:
    """The bf16 peak of a known CUDA device (None on a CPU or an unknown device)."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((flops for key, flops in DATASHEET_FLOPS.items() if key in name), None)


def device_peak_flops(device: torch.device) -> Optional[float]:
    """The datasheet peak of a known GPU, else the measured one (None on devices we cannot time: MPS, XLA)."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return datasheet_flops(device) or (measured_flops(device) if device.type in MEASURE_SIZE else None)


@functools.lru_cache(maxsize=None)
def measured_flops(device: torch.device) -> float:
    """FLOP/s of the fastest of a few square matmuls on `device` (fp32 on a CPU, at the threads torch
    uses; bf16 on a GPU), measured once per process and device: about `MEASURE_SECONDS`."""
    n = MEASURE_SIZE[device.type]
    dtype = torch.float32 if device.type == "cpu" else torch.bfloat16
    generator = torch.Generator(device=device).manual_seed(0)  # its own: the run's random state stays as seeded
    a = torch.randn(n, n, device=device, dtype=dtype, generator=generator)
    b = torch.randn(n, n, device=device, dtype=dtype, generator=generator)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda _device: None)
    torch.matmul(a, b)  # warm-up: thread pool, kernel selection
    sync(device)
    best, spent = float("inf"), 0.0
    for _ in range(MEASURE_MAX_REPEATS):
        start = time.perf_counter()
        torch.matmul(a, b)
        sync(device)
        seconds = time.perf_counter() - start
        best, spent = min(best, seconds), spent + seconds
        if spent > MEASURE_SECONDS:
            break
    return 2 * n**3 / max(best, 1e-9)
