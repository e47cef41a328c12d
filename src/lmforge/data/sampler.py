"""The order of a map-style dataset as a function of (seed, epoch), continued mid-epoch on resume."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Optional

import lightning as L
import torch
from torch.utils.data import DistributedSampler

from lmforge.compat import lightning as lightning_compat


class ResumableSampler(DistributedSampler):
    """Indices 0..n-1, shuffled by a generator seeded with (seed, epoch) when `shuffle`, this rank's
    share of them, starting where training stopped when a run resumes mid-epoch.

    Torch's RandomSampler draws its permutation from the global RNG when an epoch starts, so a resumed
    run would see another order (and restart the epoch from its first batch); here the order needs
    nothing but the seed and the epoch, and the position comes from the trainer's restored progress.
    A DistributedSampler, so that Lightning does not wrap it: it shards by rank itself (padding the
    order to a multiple of the world size, as DistributedSampler does). Lightning calls `set_epoch`.
    """

    def __init__(self, n: int, seed: int, shuffle: bool, batch_size: int, trainer: Optional[L.Trainer] = None) -> None:
        self.n, self.seed, self.shuffle, self.batch_size, self.trainer = n, seed, shuffle, batch_size, trainer
        self.num_replicas = trainer.world_size if trainer is not None else 1
        self.rank = trainer.global_rank if trainer is not None else 0
        self.epoch = 0

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

    def start(self) -> int:
        """Samples of this epoch this rank already trained on (non-zero when a run resumes mid-epoch)."""
        trainer = self.trainer
        if trainer is None or not trainer.training:
            return 0
        done = lightning_compat.batches_started_this_epoch(trainer) * self.batch_size
        return done if done < len(self) else 0  # a whole epoch done: this is the next one, from its start

    def __iter__(self) -> Iterator[int]:
        yield from self.order()[self.start():]

    def __len__(self) -> int:
        return math.ceil(self.n / self.num_replicas)
