"""Lightning CheckpointIO that writes each checkpoint to a temp file, syncs it and renames it into place,
and reads one back weights-only (a resumed checkpoint may come from someone else)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

from lightning.pytorch.plugins.io import TorchCheckpointIO

from lmforge.atomic import unwritable_as_user_error


class AtomicCheckpointIO(TorchCheckpointIO):
    """A kill or a full disk during a save leaves the previous checkpoint intact, never a truncated file;
    loading never unpickles anything but tensors and plain containers, whatever the caller asks."""

    def load_checkpoint(self, path, map_location: Optional[Any] = None, weights_only: Optional[bool] = None
                        ) -> dict[str, Any]:
        return super().load_checkpoint(path, map_location=map_location or (lambda storage, loc: storage),
                                       weights_only=True)

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Optional[Any] = None) -> None:
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp")
        with unwritable_as_user_error(path):
            try:
                super().save_checkpoint(checkpoint, tmp, storage_options)
                with open(tmp, "rb+") as f:
                    os.fsync(f.fileno())
                os.replace(tmp, path)
            finally:
                tmp.unlink(missing_ok=True)
