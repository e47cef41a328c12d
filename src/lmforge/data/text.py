"""`TextDataModule`: pretraining batches of contiguous token windows from a packed corpus.

Training windows start at offsets drawn from `torch.Generator(seed, sample_index)`, so the stream
is a pure function of (seed, global sample index): reproducible, and a resumed run continues it
exactly. Validation uses a fixed set of evenly spaced windows of the held-out documents.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from lmforge.data.base import DataModule
from lmforge.data.corpus import Source, corpus_fingerprint, iter_documents, resolve_sources, stdlib_files
from lmforge.data.packing import load_packed, pack_corpus, split_documents
from lmforge.errors import UserError
from lmforge.tokenizers import load_tokenizer

DEFAULT_TOKENIZER = {"kind": "bpe", "vocab_size": 4096, "path": None}


def sample_seed(seed: int, index: int) -> int:
    """Mix (seed, index) into one well-spread seed (splitmix64); torch's CPU generator keeps 32 bits."""
    x = (seed * 0x9E3779B97F4A7C15 + index) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return x ^ (x >> 31)


def _window(data: np.ndarray, start: int, block_size: int) -> dict[str, torch.Tensor]:
    chunk = torch.from_numpy(np.asarray(data[start : start + block_size + 1], dtype=np.int64))
    return {"input_ids": chunk[:-1], "labels": chunk[1:]}


class _Packed:
    """Opens a token file lazily per process, so datasets pickle cheaply into DataLoader workers."""

    def __init__(self, path: Path, dtype: str, length: int) -> None:
        self.path, self.dtype, self.length = path, dtype, length
        self._data: np.ndarray | None = None

    @property
    def data(self) -> np.ndarray:
        if self._data is None:
            self._data = np.memmap(self.path, dtype=self.dtype, mode="r")
        return self._data

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_data": None}


class TrainWindows(Dataset):
    """Sample i = the `block_size + 1` tokens at an offset drawn from a generator seeded by (seed, i)."""

    def __init__(self, tokens: _Packed, block_size: int, seed: int) -> None:
        self.tokens, self.block_size, self.seed = tokens, block_size, seed
        self.max_start = tokens.length - (block_size + 1)

    def __len__(self) -> int:
        return 2**62  # virtually infinite; the sampler picks the range

    def offset(self, index: int) -> int:
        g = torch.Generator().manual_seed(sample_seed(self.seed, index))
        return int(torch.randint(0, self.max_start + 1, (1,), generator=g))

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return _window(self.tokens.data, self.offset(index), self.block_size)


class StreamSampler(DistributedSampler):
    """Yields global sample indices start, start+1, ... (this rank's share), start read at each epoch.

    A DistributedSampler subclass so Lightning does not wrap it; it shards by rank itself: rank r
    of w takes start + i*w + r. `start_fn()` gives the global start (e.g. from trainer.global_step).
    """

    def __init__(self, start_fn: Callable[[], int], length: int, rank: int = 0, world_size: int = 1) -> None:
        self.start_fn, self.length, self.rank, self.num_replicas = start_fn, length, rank, world_size
        self.epoch = 0

    def __iter__(self) -> Iterator[int]:
        start = self.start_fn()
        return iter(range(start + self.rank, start + self.length * self.num_replicas, self.num_replicas))

    def __len__(self) -> int:
        return self.length

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch  # the stream position comes from start_fn, not the epoch


class FixedWindows(Dataset):
    """Fixed, non-overlapping validation windows, evenly spaced over the split."""

    def __init__(self, tokens: _Packed, block_size: int, n: int) -> None:
        span = block_size + 1
        fit = tokens.length // span
        if fit == 0:
            raise UserError(
                f"validation split has {tokens.length} tokens, fewer than block_size+1={span}; "
                "add documents, raise data.val_fraction or lower data.block_size"
            )
        n = min(n, fit)
        stride = (tokens.length - span) // (n - 1) if n > 1 else 0  # >= span since n * span <= length
        self.starts = [i * stride for i in range(n)]
        self.tokens, self.block_size = tokens, block_size

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return _window(self.tokens.data, self.starts[index], self.block_size)


class TextDataModule(DataModule):
    """Plain-text / JSONL corpus (default: the Python stdlib) -> tokenizer -> packed cache -> windows."""

    def __init__(
        self,
        paths: list[str] | None = None,
        text_field: str = "text",
        val_fraction: float = 0.05,
        block_size: int = 256,
        batch_size: int = 16,
        num_workers: int = 0,
        on_decode_error: str = "error",
        tokenizer: Mapping | None = None,
        cache_dir: str = ".cache",
        seed: int = 0,
        val_windows: int = 64,
        max_docs: int | None = None,
        num_proc: int | None = None,
    ) -> None:
        super().__init__()
        if int(block_size) <= 0:
            raise UserError(f"data.block_size={block_size}: must be > 0")
        if int(batch_size) <= 0:
            raise UserError(f"data.batch_size={batch_size}: must be > 0")
        if int(val_windows) <= 0:
            raise UserError(f"data.val_windows={val_windows}: must be > 0")
        if on_decode_error not in ("error", "skip"):
            raise UserError(f"data.on_decode_error={on_decode_error}: expected 'error' or 'skip'")
        if not 0.0 <= float(val_fraction) < 1.0:
            raise UserError(f"data.val_fraction={val_fraction}: must be in [0, 1)")
        self.sources: list[Source] = resolve_sources(list(paths)) if paths else stdlib_files()
        self.tokenizer_cfg = {**DEFAULT_TOKENIZER, **dict(tokenizer or {})}
        self.text_field, self.val_fraction, self.on_decode_error = text_field, float(val_fraction), on_decode_error
        self.block_size, self.batch_size, self.num_workers = int(block_size), int(batch_size), int(num_workers)
        self.cache_dir, self.seed, self.val_windows = Path(cache_dir), int(seed), int(val_windows)
        self.max_docs, self.num_proc = max_docs, num_proc
        self.start_sample: int | None = None  # set to override the trainer-derived stream position
        self.tokenizer = None
        self.tokenizer_dir: Path | None = None
        self.packed_dir: Path | None = None
        self.packed_built = False  # True when the last prepare tokenized (False: cache reused)
        self.meta: dict = {}
        self._docs: list[str] | None = None
        self.val_bytes_per_token = float("nan")

    # ---- preparing: tokenizer + packed cache (idempotent, cheap when cached)
    def _fingerprint(self) -> str:
        return corpus_fingerprint(
            self.sources, text_field=self.text_field, on_decode_error=self.on_decode_error, max_docs=self.max_docs
        )

    def documents(self) -> list[str]:
        if self._docs is None:
            it = iter_documents(self.sources, self.text_field, self.on_decode_error)
            self._docs = [d for d, _ in zip(it, range(self.max_docs))] if self.max_docs else list(it)
        return self._docs

    def prepare_tokenizer(self) -> None:
        """Build or reuse the tokenizer (trained on the train documents only): `lmforge tokenizer`."""
        def train_documents() -> list[str]:  # the tokenizer never sees validation text
            docs = self.documents()
            return [d for d, v in zip(docs, split_documents(len(docs), self.val_fraction)) if not v]

        cfg = self.tokenizer_cfg
        self.tokenizer, self.tokenizer_dir = load_tokenizer(
            cfg["kind"], vocab_size=cfg.get("vocab_size"), path=cfg.get("path"), cache_dir=self.cache_dir,
            documents_fn=train_documents, fingerprint=self._fingerprint(),
        )

    def _prepare(self) -> None:
        self.prepare_tokenizer()
        self.packed_dir, built = pack_corpus(
            self.documents, self.tokenizer, cache_dir=self.cache_dir, corpus_fp=self._fingerprint(),
            val_fraction=self.val_fraction, tokenizer_dir=self.tokenizer_dir, num_proc=self.num_proc,
        )
        self.packed_built = self.packed_built or built
        self._docs = None  # the packed files hold them now

    def prepare_data(self) -> None:
        """Build or reuse the tokenizer and the packed token files (runs on one process per node)."""
        self.packed_built = False
        self._prepare()

    def setup(self, stage: str | None = None) -> None:
        """Load tokenizer and memory-mapped tokens (reusing what prepare_data built, maybe elsewhere)."""
        if self.packed_dir is None:
            self._prepare()
        train, val, self.meta = load_packed(self.packed_dir)
        self.val_bytes_per_token = self.meta["val_bytes"] / max(1, self.meta["val_tokens"])
        if len(train) < self.block_size + 1:
            raise UserError(
                f"train split has {len(train)} tokens, fewer than block_size+1={self.block_size + 1}; "
                "add documents or lower data.block_size"
            )
        dtype = self.meta["dtype"]
        self._train = _Packed(self.packed_dir / "train.bin", dtype, len(train))
        self._val = _Packed(self.packed_dir / "val.bin", dtype, len(val))
        self.train_dataset = TrainWindows(self._train, self.block_size, self.seed)

    @property
    def dims(self) -> dict[str, int]:
        """What the model needs from the data: {"vocab_size": len(tokenizer)}."""
        if self.tokenizer is None:
            self.setup()
        return {"vocab_size": len(self.tokenizer)}

    @property
    def context_length(self) -> int:
        return self.block_size

    def bytes_per_token(self, stage: str) -> float:
        """Bytes per token of the held-out documents (validation and test share them)."""
        return self.val_bytes_per_token

    # ---- loaders
    def _stream_start(self) -> int:
        """Global sample index where training continues: override, or trainer.global_step * samples/step."""
        if self.start_sample is not None:
            return int(self.start_sample)
        t = self.trainer
        if t is None:
            return 0
        return int(t.global_step) * self.batch_size * int(t.accumulate_grad_batches) * int(t.world_size)

    def _loader(self, dataset: Dataset, sampler=None) -> DataLoader:
        return DataLoader(
            dataset, batch_size=self.batch_size, sampler=sampler, shuffle=False, num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0, pin_memory=torch.cuda.is_available(),
        )

    def train_dataloader(self) -> DataLoader:
        """An endless-in-principle stream; one "epoch" covers about the train tokens once.

        The epoch is a whole number of optimizer steps (batch_size * accumulate_grad_batches samples
        per rank), so no step mixes epochs and global_step maps exactly to the stream position.
        """
        t = self.trainer
        rank, world, accumulate = (t.global_rank, t.world_size, t.accumulate_grad_batches) if t else (0, 1, 1)
        per_step = self.batch_size * int(accumulate)
        steps = max(1, math.ceil(self._train.length / self.block_size / int(world) / per_step))
        sampler = StreamSampler(self._stream_start, steps * per_step, int(rank), int(world))
        return self._loader(self.train_dataset, sampler)

    def val_dataloader(self) -> DataLoader:
        return self._loader(FixedWindows(self._val, self.block_size, self.val_windows))

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()
