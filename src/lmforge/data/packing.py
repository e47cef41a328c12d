"""Tokenize a corpus once and pack it into flat token files `train.bin` / `val.bin` + `meta.json`.

Like nanoGPT's prepare.py: each text's ids followed by eos, concatenated, stored as uint16 (uint32
for vocabularies over 65536) so that training memory-maps them. Cached under
`cache_dir/corpus/<key>`, key = hash(corpus fingerprint, tokenizer fingerprint, format version).

Built for corpora larger than memory: the text streams through (`Corpus.parts`: documents, plain-text
files in ~256 KB pieces that encode like the whole file), batches of ~1 MB
are encoded on one thread per core with a bounded number in flight, and ids are appended to the
files in corpus order as they come back. Threads, not processes: both encoders release the GIL
while they encode (tiktoken per text, `tokenizers` per batch), so threads use every core without a
process start-up (~1 s a worker) or copying text and ids between processes; measured in
benchmarks/tokenize_pack.py. Every ~64 MB of text the files are flushed and the progress recorded,
so an interrupted build continues where it stopped; the finished directory appears at once,
meta.json included. One process builds an entry (an exclusive file lock); the others wait, then
reuse it.

Why not litdata (Lightning's streaming format, `optimize` + `StreamingDataset`)? It installs a
torchvision that broke imports alongside the pinned CPU torch build, and a memory-mapped train.bin read at
offsets drawn from (seed, sample index) already gives an exact, resumable stream: this file is
the whole packer, and training needs nothing else.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import hashlib
import itertools
import json
import logging
import os
import shutil
import sys
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from lmforge import signals
from lmforge.atomic import publish_dir, unwritable_as_user_error, write_json
from lmforge.data.corpus import Corpus
from lmforge.data.plaintext import Part
from lmforge.errors import Stopped, UserError
from lmforge.tokenizers.fast import TextEncoder, encodes_pieces_alike
from lmforge.tokenizers.specs import tokenizer_fingerprint

FORMAT_VERSION = 3  # 3: a plain-text file is read in pieces (an interrupted build counts them)
COUNTS = ("parts", "train_tokens", "val_tokens", "train_bytes", "val_bytes", "train_docs", "val_docs")
BATCH_BYTES = 1 << 20  # text per encoding task
CHECKPOINT_BYTES = 64 << 20  # text between two saved progress points
CHECK_CHARS = 64 << 10  # text encoded both ways before trusting tiktoken on a corpus

log = logging.getLogger(__name__)


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 when every id fits, else uint32."""
    return np.dtype(np.uint16 if vocab_size <= 1 << 16 else np.uint32)


def default_num_proc() -> int:
    """Every core this process may run on (its CPU affinity: SLURM and containers narrow it)."""
    # hasattr: Linux only
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@contextlib.contextmanager
def exclusive(path: Path, what: str) -> Iterator[None]:
    """Hold `<path>.lock` exclusively (an fcntl lock, dropped by the kernel if the process dies):
    the first process does `what`, the others wait here, then find it done. Where no lock file can
    be made (a read-only cache someone built before), nobody can build either: go on unlocked."""
    from filelock import FileLock, Timeout

    lock = FileLock(f"{path}.lock")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            log.info("waiting for another process %s (%s.lock)", what, path)
            lock.acquire()
    except OSError as e:
        if e.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
            raise
        log.debug("no lock for %s (%s): read-only", path, e)
        yield
        return
    try:
        yield
    finally:
        lock.release()


def _whole(parts: Iterable[Part]) -> Iterator[Part]:
    """The parts with each document's pieces joined (for tokenizers that might merge across a cut)."""
    texts: list[str] = []
    for text, held_out, ends in parts:
        texts.append(text)
        if ends:
            yield "".join(texts), held_out, True
            texts = []


def _batches(parts: Iterable[Part]) -> Iterator[list[Part]]:
    batch: list[Part] = []
    size = 0
    for part in parts:
        batch.append(part)
        size += len(part[0])
        if size >= BATCH_BYTES:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def _text_encoder(tokenizer_json: str, fast: bool, batch: list[Part]) -> TextEncoder:
    """tiktoken when `fast`, the tokenizer converts and tiktoken gives its ids on the start of this
    text; else the tokenizer itself."""
    if not fast:
        return TextEncoder(tokenizer_json, fast=False)
    candidate = TextEncoder(tokenizer_json, fast=True)
    if candidate.name != "tiktoken":
        return candidate  # it did not convert: this is the tokenizer itself
    sample = "".join(text for text, _, _ in batch)[:CHECK_CHARS]
    reference = TextEncoder(tokenizer_json, fast=False)
    if candidate.encode_batch([sample]) == reference.encode_batch([sample]):
        return candidate
    log.warning("tiktoken gives other ids than the tokenizer itself on this corpus: encoding with tokenizers")
    return reference


class BatchEncoder:
    """A batch of parts -> (packed train ids, packed val ids, counts); eos after each part that ends
    a document (or its head or tail); safe to call from several threads at once."""

    def __init__(self, encoder: TextEncoder, eos_id: int, dtype: np.dtype) -> None:
        self.encoder, self.eos, self.dtype = encoder, eos_id, dtype

    def __call__(self, batch: list[Part]) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
        encoded = self.encoder.encode_batch([text for text, _, _ in batch])
        ids: dict[bool, list[int]] = {False: [], True: []}
        counts = dict.fromkeys(COUNTS, 0)
        for (text, held_out, ends), part in zip(batch, encoded):
            ids[held_out] += part
            side = "val" if held_out else "train"
            counts[f"{side}_bytes"] += len(text.encode())
            if ends:
                ids[held_out].append(self.eos)
                counts[f"{side}_docs"] += 1
        counts["parts"] = len(batch)
        counts["train_tokens"], counts["val_tokens"] = len(ids[False]), len(ids[True])
        return np.array(ids[False], dtype=self.dtype), np.array(ids[True], dtype=self.dtype), counts


def _encoded(batches: Iterator[list[Part]], tokenizer_json: str, eos_id: int, dtype: np.dtype,
             num_threads: int, fast: bool, state: dict) -> Iterator[tuple[np.ndarray, np.ndarray, dict]]:
    """The encoded batches, in order, from `num_threads` threads with at most 2 * num_threads
    batches in flight (bounded memory)."""
    first = next(batches, None)
    if first is None:
        return
    encoder = BatchEncoder(_text_encoder(tokenizer_json, fast, first), eos_id, dtype)
    state["encoder"] = encoder.encoder.name
    pool = ThreadPoolExecutor(num_threads, thread_name_prefix="lmforge-tokenize")
    try:
        pending: collections.deque = collections.deque()
        for batch in itertools.chain([first], batches):
            pending.append(pool.submit(encoder, batch))
            if len(pending) >= 2 * num_threads:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        pool.shutdown(cancel_futures=True)


# ---- main side
def packed_key(corpus_fp: str, tokenizer: Any) -> str:
    """Cache key of a packed corpus (the corpus fingerprint covers its split settings and validation files)."""
    blob = json.dumps([corpus_fp, tokenizer_fingerprint(tokenizer), FORMAT_VERSION])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _progress_bar():
    from rich.progress import DownloadColumn, Progress, SpinnerColumn, TextColumn, TransferSpeedColumn

    return Progress(TextColumn("tokenizing"), SpinnerColumn(), DownloadColumn(), TransferSpeedColumn(),
                    disable=not sys.stderr.isatty(), transient=True)


def _resume(partial: Path, dtype: np.dtype) -> dict[str, int]:
    """Counts of an interrupted build in `partial` (zeros if none), its files cut back to them."""
    fresh = dict.fromkeys(COUNTS, 0)
    try:
        progress = {**fresh, **json.loads((partial / "progress.json").read_text())}
    except (OSError, ValueError):
        progress = fresh
    sizes = {name: progress[f"{name}_tokens"] * dtype.itemsize for name in ("train", "val")}
    if any(not (partial / f"{n}.bin").exists() or (partial / f"{n}.bin").stat().st_size < s
           for n, s in sizes.items()):
        progress, sizes = fresh, dict.fromkeys(sizes, 0)
    for name, size in sizes.items():
        with open(partial / f"{name}.bin", "ab") as f:
            f.truncate(size)  # drop what was written after the last saved progress
    if progress["parts"]:
        log.info("continuing an interrupted build of %s after %d texts", partial, progress["parts"])
    return progress


def _partial(out: Path) -> Path:
    """Where the build of `out` grows; kept when interrupted, so that the next build continues it."""
    return out.parent / f".{out.name}.partial"


def _interrupted(partial: Path, word: str = "interrupted") -> str:
    """The line for a build stopped by Ctrl-C or SIGTERM (`word`): what it keeps for the next launch."""
    try:
        progress = json.loads((partial / "progress.json").read_text())
    except (OSError, ValueError):
        return (f"{word} while tokenizing the corpus, before its first saved point (every "
                f"{CHECKPOINT_BYTES >> 20} MB of text): the next launch starts it anew")
    done = (progress["train_bytes"] + progress["val_bytes"]) / 1e6
    return (f"{word} while tokenizing the corpus: {partial} keeps the first {done:,.0f} MB of text, "
            "packed; the same command continues from there")


def _save_progress(partial: Path, progress: dict, *files) -> None:
    for f in files:
        f.flush()
        os.fsync(f.fileno())
    write_json(partial / "progress.json", progress)


def pack_corpus(corpus: Corpus, tokenizer: Any, *, cache_dir: str | Path, tokenizer_dir: str | Path | None = None,
                num_proc: int | None = None, fast: bool = True) -> tuple[Path, bool]:
    """Return (packed dir, built): reuse `cache_dir/corpus/<key>` if it is there, else build it
    (continuing an interrupted build) on `num_proc` threads (default: every core). `tokenizer` is a
    Hugging Face fast tokenizer; `fast=False` encodes with it even where tiktoken would give the
    same ids faster (for comparisons)."""
    out = Path(cache_dir) / "corpus" / packed_key(corpus.fingerprint, tokenizer)
    if (out / "meta.json").exists():
        return out, False
    with exclusive(out, "packing this corpus"):
        if (out / "meta.json").exists():
            return out, False  # built by another process while this one waited
        try:
            with unwritable_as_user_error(out):
                _build(out, corpus, tokenizer, tokenizer_dir, num_proc or default_num_proc(), fast)
        except (KeyboardInterrupt, signals.Signalled) as exc:
            status, word = signals.stop_of(exc)
            raise Stopped(status, _interrupted(_partial(out), word)) from None
    return out, True


def _build(out: Path, corpus: Corpus, tokenizer: Any, tokenizer_dir: str | Path | None, num_proc: int,
           fast: bool) -> None:
    eos_id = tokenizer.eos_token_id
    if eos_id is None:
        raise UserError("the tokenizer has no eos token to separate documents")
    dtype = token_dtype(len(tokenizer))
    partial = _partial(out)
    partial.mkdir(exist_ok=True)
    progress = _resume(partial, dtype)
    tokenizer_json = tokenizer.backend_tokenizer.to_str()
    parts = corpus.parts() if encodes_pieces_alike(tokenizer_json) else _whole(corpus.parts())
    parts = itertools.islice(parts, progress["parts"], None)
    state: dict = {"encoder": None}
    results = _encoded(_batches(parts), tokenizer_json, eos_id, dtype, num_proc, fast, state)
    with open(partial / "train.bin", "ab") as ftrain, open(partial / "val.bin", "ab") as fval, \
            contextlib.closing(results), _progress_bar() as bar:
        task = bar.add_task("tokenizing", total=None)
        unsaved = 0
        for train, val, counts in results:
            ftrain.write(train.tobytes())
            fval.write(val.tobytes())
            for key, value in counts.items():
                progress[key] += value
            text_bytes = counts["train_bytes"] + counts["val_bytes"]
            bar.advance(task, text_bytes)
            unsaved += text_bytes
            if unsaved >= CHECKPOINT_BYTES:
                _save_progress(partial, progress, ftrain, fval)
                unsaved = 0
        _save_progress(partial, progress, ftrain, fval)
    meta = {
        "format_version": FORMAT_VERSION,
        "dtype": dtype.name,
        **{key: progress[key] for key in COUNTS if key != "parts"},
        "split": corpus.split_by,  # "document", "files" (data.val_paths), or "position": *_docs count heads and tails
        "val_fraction": corpus.val_fraction,
        "eos_id": eos_id,
        "vocab_size": len(tokenizer),
        "tokenizer_dir": str(tokenizer_dir) if tokenizer_dir is not None else None,
        "corpus_fingerprint": corpus.fingerprint,
        "encoder": state["encoder"],
    }
    with publish_dir(out, replace=True) as tmp:
        for name in ("train.bin", "val.bin"):
            os.replace(partial / name, tmp / name)
        write_json(tmp / "meta.json", meta)
    shutil.rmtree(partial, ignore_errors=True)


def load_packed(path: str | Path) -> tuple[np.ndarray, np.ndarray, dict]:
    """Memory-map (train, val) token arrays of a packed dir; return them with its meta."""
    path = Path(path)
    try:
        meta = json.loads((path / "meta.json").read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"{path}/meta.json: not a packed corpus ({e})") from None
    dtype = np.dtype(meta["dtype"])

    def open_split(name: str) -> np.ndarray:
        f = path / f"{name}.bin"
        return np.memmap(f, dtype=dtype, mode="r") if f.stat().st_size else np.zeros(0, dtype=dtype)

    return open_split("train"), open_split("val"), meta
