"""The order of a map-style dataset as a function of (seed, epoch), continued mid-epoch on resume, and
the training DataLoader whose position Lightning checkpoints and restores."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any, Optional

import lightning as L
import torch
from torch.utils.data import DataLoader, DistributedSampler

from lmforge.compat import lightning as lightning_compat


class PositionedLoader(DataLoader):
    """A DataLoader with `state_dict()`/`load_state_dict()`, its sampler's: Lightning's fit loop saves the
    state of a stateful training loader in every checkpoint and gives it back on resume, so it knows
    the data continues where training stopped (else it warns that results may be unreliable). A sampler
    without that interface (Lightning's overfit_batches swaps one in) has no position to keep."""

    def state_dict(self) -> dict[str, Any]:
        # hasattr: a sampler Lightning swaps in (overfit_batches) is a plain torch one, with no state
        return self.sampler.state_dict() if hasattr(self.sampler, "state_dict") else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict and hasattr(self.sampler, "load_state_dict"):
            self.sampler.load_state_dict(state_dict)


class ResumableSampler(DistributedSampler):
    """Indices 0..n-1, shuffled by a generator seeded with (seed, epoch) when `shuffle`, this rank's
    share of them, starting where training stopped when a run resumes mid-epoch: its state (the epoch
    and the samples of it trained on, the same on every rank) is saved in checkpoints and restored.

    Torch's RandomSampler draws its permutation from the global RNG when an epoch starts, so a resumed
    run would see another order (and restart the epoch from its first batch); here the order needs
    nothing but the seed and the epoch, and the position comes from the restored state (from the
    trainer's restored progress for a checkpoint written before the state was saved).
    A DistributedSampler, so that Lightning does not wrap it: it shards by rank itself (padding the
    order to a multiple of the world size, as DistributedSampler does). Lightning calls `set_epoch`.
    """

    def __init__(self, n: int, seed: int, shuffle: bool, batch_size: int, trainer: Optional[L.Trainer] = None) -> None:
        self.n, self.seed, self.shuffle, self.batch_size, self.trainer = n, seed, shuffle, batch_size, trainer
        self.num_replicas = trainer.world_size if trainer is not None else 1
        self.rank = trainer.global_rank if trainer is not None else 0
        self.epoch = 0
        self._restored: Optional[tuple[int, int]] = None  # (epoch, samples done) of a checkpoint, used once

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def order(self) -> list[int]:
        """This rank's indices of the current epoch."""
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(self.n, generator=generator).tolist()
        else:
            order = list(range(self.n))
        total = len(self) * self.num_replicas
        order += order[: total - self.n]
        return order[self.rank:total:self.num_replicas]

    def done(self) -> int:
        """Samples of this epoch this rank has trained on, by the trainer's progress (batches fetched
        and trained on, not those a DataLoader prefetched)."""
        trainer = self.trainer
        if trainer is None or not trainer.training:
            return 0
        return lightning_compat.batches_started_this_epoch(trainer) * self.batch_size

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "samples": self.done()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._restored = (int(state_dict["epoch"]), int(state_dict["samples"]))

    def start(self) -> int:
        """Samples of this epoch this rank already trained on (non-zero when a run resumes mid-epoch)."""
        if self._restored is not None:
            (epoch, done), self._restored = self._restored, None
            done = done if epoch == self.epoch else 0  # saved at an epoch's end: this is the next one
        else:
            done = self.done()
        return done if done < len(self) else 0  # a whole epoch done: this is the next one, from its start

    def __iter__(self) -> Iterator[int]:
        yield from self.order()[self.start():]

    def __len__(self) -> int:
        return math.ceil(self.n / self.num_replicas)
