"""`data.sources`: a pretraining corpus mixed from named sources by weight.

    lmforge train +data.sources.web.paths=[out/web] +data.sources.web.weight=0.7 \\
                  +data.sources.books.paths=[books/] +data.sources.books.weight=0.3

Each source is a corpus of its own (files, folders, globs; its own train/validation split as for
data.paths), packed into its own cache entry with the one tokenizer of the run (trained on the train
text of every source). Training sample i comes from the source that a hash of (stream seed, i) picks
with the sources' probabilities (their weights over the weights' sum), at an offset hashed from the
same pair: the stream stays a pure function of (seed, sample index), so a resumed run continues it
exactly; the stream seed mixes in the names and weights, so a changed weight is a new stream.
Validation keeps each source's held-out part apart: `data.val_windows` windows of each, their mean
over all of them as val/loss (val/bpb), and each source's own as val/loss/<source> (val/bpb/<source>).
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from torch.utils.data import Dataset

from lmforge.data.corpus import Corpus
from lmforge.data.packing import load_packed, pack_corpus
from lmforge.data.prepared import resolve_corpus
from lmforge.data.windows import FixedWindows, Packed, as_samples, gather
from lmforge.errors import UserError
from lmforge.seeding import mix, sample_seeds

SOURCE_KEYS = ("paths", "weight", "val_paths")
_NAME = re.compile(r"[A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class SourceSpec:
    """One named source of a mixture: its files, its weight and (optional) validation files of its own."""

    name: str
    paths: tuple[str, ...]
    weight: float
    val_paths: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        return f"data.sources.{self.name}"


def _weight(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UserError(f"{key}.weight={value!r}: expected a number >= 0")
    if not math.isfinite(value) or value < 0:
        raise UserError(f"{key}.weight={value}: must be a finite number >= 0")
    return float(value)


def parse_sources(sources: Mapping) -> list[SourceSpec]:
    """The sources of `data.sources` sorted by name (their order on the command line does not matter);
    one line naming the key at fault for a bad one, or for weights that do not sum to a positive number."""
    if not isinstance(sources, Mapping) or not sources:
        raise UserError("data.sources: expected a mapping of named sources, e.g. "
                        "+data.sources.web.paths=[web/] +data.sources.web.weight=0.7")
    specs = []
    for name in sorted(sources):
        key, node = f"data.sources.{name}", sources[name]
        if not _NAME.fullmatch(str(name)):
            raise UserError(f"{key}: a source name takes letters, digits, '_', '.' and '-' only")
        if not isinstance(node, Mapping):
            raise UserError(f"{key}: expected a mapping with paths and weight, got {node!r}")
        for field in node:
            if field not in SOURCE_KEYS:
                raise UserError(f"unknown config key '{key}.{field}' (a source takes: {', '.join(SOURCE_KEYS)})")
        paths = node.get("paths")
        if isinstance(paths, str):
            paths = [paths]
        if not paths:
            raise UserError(f"{key}.paths: missing: the source's files, folders or globs "
                            f"(+{key}.paths=[DIR])")
        val_paths = node.get("val_paths") or ()
        val_paths = [val_paths] if isinstance(val_paths, str) else val_paths
        specs.append(SourceSpec(str(name), tuple(str(p) for p in paths), _weight(key, node.get("weight", 1.0)),
                                tuple(str(p) for p in val_paths)))
    total = sum(s.weight for s in specs)
    if not total > 0:
        weights = ", ".join(f"{s.name}={s.weight:g}" for s in specs)
        raise UserError(f"data.sources: the weights ({weights}) sum to {total:g}: give at least one source "
                        "a positive weight (data.sources.<name>.weight)")
    return specs


class MixedCorpus:
    """The corpora of a mixture's sources as one, for what reads them all: the tokenizer trains on
    the train text of every source (unweighted), and `lmforge tokenizer` samples their documents."""

    val_sources = None

    def __init__(self, corpora: dict[str, Corpus]) -> None:
        self.corpora = corpora
        self.val_fraction = next(iter(corpora.values())).val_fraction

    @functools.cached_property
    def fingerprint(self) -> str:
        """Of every source's files and split (not of the weights: a reweighted mixture keeps its tokenizer)."""
        blob = json.dumps(sorted((name, corpus.fingerprint) for name, corpus in self.corpora.items()))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    @property
    def has_validation(self) -> bool:
        return any(corpus.has_validation for corpus in self.corpora.values())

    def train_texts(self) -> Iterator[str]:
        return itertools.chain.from_iterable(corpus.train_texts() for corpus in self.corpora.values())

    def documents(self, max_chars: Optional[int] = None) -> Iterator[str]:
        return itertools.chain.from_iterable(corpus.documents(max_chars) for corpus in self.corpora.values())


def stream_seed(seed: int, specs: list[SourceSpec]) -> int:
    """The seed of a mixed stream: the run's seed with the sources' names and weights."""
    blob = json.dumps([[s.name, s.weight] for s in specs]).encode()
    return mix(seed, int.from_bytes(hashlib.sha256(blob).digest()[:7], "little"))


class MixedWindows(Dataset):
    """Training sample i: source `choose(i)`, at an offset in its train tokens hashed from (stream seed, i)."""

    def __init__(self, tokens: list[Packed], weights: list[float], block_size: int, seed: int,
                 eos_id: Optional[int] = None) -> None:
        self.tokens, self.block_size, self.seed, self.eos_id = tokens, block_size, seed, eos_id
        p = np.asarray(weights, dtype=np.float64)
        self.cumulative = np.cumsum(p / p.sum())
        self.cumulative[-1] = 1.0
        self.max_start = np.array([max(0, t.length - (block_size + 1)) for t in tokens], dtype=np.uint64)
        self._choice_seed = mix(seed, 1)

    def __len__(self) -> int:
        return 2**62  # virtually infinite; the sampler picks the range

    def choose(self, indices) -> np.ndarray:
        """The source of each sample index: a uniform number in [0, 1) per index against the cumulative
        probabilities (a source of weight 0 is never chosen)."""
        u = (sample_seeds(self._choice_seed, indices) >> np.uint64(11)).astype(np.float64) * 2.0**-53
        return np.searchsorted(self.cumulative, u, side="right")

    def __getitems__(self, indices: list[int]) -> list[dict[str, torch.Tensor]]:
        chosen = self.choose(indices)
        offsets = (sample_seeds(self.seed, indices) % (self.max_start[chosen] + np.uint64(1))).astype(np.int64)
        rows = torch.empty(len(indices), self.block_size + 1, dtype=torch.int64)
        for source in np.unique(chosen):
            at = np.flatnonzero(chosen == source)
            rows[torch.from_numpy(at)] = gather(self.tokens[source].data, offsets[at], self.block_size)
        return as_samples(rows, self.eos_id)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self.__getitems__([index])[0]


class Interleaved(Dataset):
    """The samples of several datasets in turn: the first of each, then the second of each, ..."""

    def __init__(self, parts: list[Dataset]) -> None:
        self.parts = parts
        longest = max(len(p) for p in parts)
        self.order = [(i, j) for j in range(longest) for i, p in enumerate(parts) if j < len(p)]

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        part, item = self.order[index]
        return self.parts[part][item]


class Mixture:
    """The sources of `data.sources`, each a `Corpus` read with the data's settings, packed and windowed."""

    def __init__(self, sources: Mapping, text_field: str, on_decode_error: str, val_fraction: float,
                 max_docs: Optional[int]) -> None:
        self.specs = parse_sources(sources)
        self.corpora = {s.name: Corpus(resolve_corpus(list(s.paths), f"{s.key}.paths"), text_field,
                                       on_decode_error, val_fraction, max_docs,
                                       resolve_corpus(list(s.val_paths), f"{s.key}.val_paths") if s.val_paths
                                       else None, key=s.key) for s in self.specs}
        self.corpus = MixedCorpus(self.corpora)
        self.packed_dirs: dict[str, Path] = {}
        self.train: list[Packed] = []
        self.val: list[Packed] = []
        self.val_bytes_per_token: dict[str, float] = {}
        self._val_windows: dict[str, int] = {}

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.specs]

    def pack(self, tokenizer: Any, cache_dir: Path, tokenizer_dir: Optional[Path], num_proc: Optional[int]) -> bool:
        """Pack every source (each its own cache entry, reused by any mixture that has it); whether any was built."""
        built = False
        for name, corpus in self.corpora.items():
            self.packed_dirs[name], fresh = pack_corpus(corpus, tokenizer, cache_dir=cache_dir,
                                                        tokenizer_dir=tokenizer_dir, num_proc=num_proc)
            built = built or fresh
        return built

    def load(self, block_size: int) -> dict:
        """Memory-map every source's splits; the first source's meta (dtype, eos: the same for all)."""
        self.train, self.val, metas = [], [], []
        for spec in self.specs:
            directory = self.packed_dirs[spec.name]
            train, val, meta = load_packed(directory)
            if spec.weight > 0 and len(train) < block_size + 1:
                raise UserError(f"{spec.key}: its train part has {len(train)} tokens, fewer than block_size+1="
                                f"{block_size + 1}; add text to {spec.key}.paths or lower data.block_size")
            self.train.append(Packed(directory / "train.bin", meta["dtype"], len(train)))
            self.val.append(Packed(directory / "val.bin", meta["dtype"], len(val)))
            self.val_bytes_per_token[spec.name] = meta["val_bytes"] / max(1, meta["val_tokens"])
            metas.append(meta)
        return metas[0]

    @property
    def train_tokens(self) -> int:
        return sum(t.length for t in self.train)

    def train_dataset(self, block_size: int, seed: int, eos_id: Optional[int]) -> MixedWindows:
        return MixedWindows(self.train, [s.weight for s in self.specs], block_size, stream_seed(seed, self.specs),
                            eos_id)

    def val_dataset(self, block_size: int, n: int, eos_id: Optional[int]) -> Interleaved:
        """`n` fixed windows of each source's validation part (fewer where it is short), tagged with the
        source, taken in turn from each (so that a few batches of them, trainer.limit_val_batches, see every source)."""
        parts = []
        for i, spec in enumerate(self.specs):
            parts.append(FixedWindows(self.val[i], block_size, n, eos_id=eos_id, source=i,
                                      what=f"{spec.key}: its validation part",
                                      remedy=f"add text to {spec.key}.val_paths or lower data.block_size"
                                      if spec.val_paths else f"add text to {spec.key}.paths, raise "
                                      "data.val_fraction or lower data.block_size"))
            self._val_windows[spec.name] = len(parts[-1])
        return Interleaved(parts)

    def bytes_per_token(self) -> float:
        """Bytes per token over all validation windows (each source's weighs by its windows)."""
        counts = self._val_windows or {name: 1 for name in self.names}
        return sum(counts[n] * self.val_bytes_per_token[n] for n in counts) / sum(counts.values())
