"""One device slot per parallel sweep worker: `launcher=joblib` on a multi-GPU box runs one job per GPU.

Each worker process claims the first free slot of the sweep (an flock held for the life of the
process, so a worker reused for its next job keeps its slot, and a dead worker's slot frees itself)
and restricts CUDA_VISIBLE_DEVICES to that slot's devices before CUDA starts.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import Optional

_claimed: Optional[tuple[int, object]] = None  # (slot, open lock file) of this process


def claim_slot(sweep_dir: str | Path, slots: int) -> int:
    """This process's slot among `slots` (claimed on first call, kept until the process exits)."""
    global _claimed
    if _claimed is None:
        Path(sweep_dir).mkdir(parents=True, exist_ok=True)
        for slot in range(slots):
            lock = open(Path(sweep_dir) / f".device-slot-{slot}.lock", "a")  # noqa: SIM115 - held on purpose
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                lock.close()
                continue
            _claimed = (slot, lock)
            break
        else:  # more workers than slots: share the last one rather than fail
            _claimed = (slots - 1, None)
    return _claimed[0]


def restrict_devices(sweep_dir: str | Path, slots: int, per_job: int) -> str:
    """Set CUDA_VISIBLE_DEVICES to this worker's `per_job` devices (indices into what was visible
    before, all GPUs when nothing was set); returns the value."""
    slot = claim_slot(sweep_dir, slots)
    visible = os.environ.get("LMFORGE_ALL_DEVICES") or os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        devices = [str(i) for i in range(slots * per_job)]
    else:
        devices = visible.split(",")
    os.environ["LMFORGE_ALL_DEVICES"] = ",".join(devices)  # what a reused worker's next job starts from
    mine = devices[slot * per_job:(slot + 1) * per_job] or devices[-per_job:]
    os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(mine)
    return os.environ["CUDA_VISIBLE_DEVICES"]
