"""checkpoints/last.ckpt, the newest state: linked to the checkpoint just written at the same step
rather than the same model and optimizer state serialized and synced a second time."""

from __future__ import annotations

import os
from typing import Optional
from weakref import proxy

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint

from lmforge.compat import lightning as lightning_compat


class LastCheckpoint(ModelCheckpoint):
    """A `ModelCheckpoint` (use it with `monitor=None`: each save replaces the last) that, when another
    `ModelCheckpoint` has just saved a file at this same step (best.ckpt after an improvement), makes
    its file a hard link to that one, swapped in atomically. Same bytes, one write instead of two: at
    each improving validation this saves a full save and fsync (~14 ms for the tiny model on a CPU,
    seconds for GPT-2 124M with its AdamW state). Where no link can be made (a sharded checkpoint
    directory, a file system without hard links) it saves as `ModelCheckpoint` does."""

    def _same_step_file(self, trainer: L.Trainer) -> Optional[str]:
        """The file another checkpoint callback wrote at this global step, if any (rank 0's view)."""
        for callback in trainer.checkpoint_callbacks:
            if callback is not self and isinstance(callback, ModelCheckpoint):
                step, path = lightning_compat.last_saved(callback)
                if step == trainer.global_step and path and os.path.isfile(path):
                    return path
        return None

    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        linked = False
        if trainer.is_global_zero:
            source = self._same_step_file(trainer)
            linked = source is not None and _link(source, filepath)
        # Every rank takes the same branch: a save is collective, a link is rank 0's alone.
        if not trainer.strategy.broadcast(linked, src=0):
            super()._save_checkpoint(trainer, filepath)
            return
        trainer.strategy.barrier()
        lightning_compat.set_last_saved(self, trainer.global_step, filepath)
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.after_save_checkpoint(proxy(self))


def _link(source: str, target: str) -> bool:
    """Hard-link `source` as `target`, replacing it atomically; False where links are not possible."""
    if os.path.abspath(source) == os.path.abspath(target):
        return False
    tmp = os.path.join(os.path.dirname(target), f".{os.path.basename(target)}.link")
    try:
        if os.path.lexists(tmp):
            os.remove(tmp)
        os.link(source, tmp)
        os.replace(tmp, target)
    except OSError:  # no hard links here (EPERM, EXDEV, ENOTSUP, EMLINK...): write a copy instead
        if os.path.lexists(tmp):
            os.remove(tmp)
        return False
    return True
