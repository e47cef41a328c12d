"""Tokenize a corpus once and pack it into flat token files `train.bin` / `val.bin` + `meta.json`.

Like nanoGPT's prepare.py: each document's ids followed by eos, concatenated, stored as uint16
(or uint32 for vocabularies over 65536) so training can memory-map them. The result is cached under
`cache_dir/corpus/<key>`, key = hash(corpus fingerprint, tokenizer fingerprint, val_fraction, version).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import uuid
from collections.abc import Iterator, Sequence
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from transformers import PreTrainedTokenizerFast

from lmforge.errors import UserError
from lmforge.tokenizers import tokenizer_fingerprint

FORMAT_VERSION = 1
BATCH_BYTES = 1 << 20  # text per worker task
MIN_PARALLEL_BYTES = 4 << 20  # below this, tokenizing in-process beats starting workers


def is_val(index: int, val_fraction: float) -> bool:
    """Whether document `index` goes to validation: a stable hash of the index, not random state."""
    h = int.from_bytes(hashlib.sha256(f"doc:{index}".encode()).digest()[:8], "big")
    return h / 2**64 < val_fraction


def split_documents(n_docs: int, val_fraction: float) -> list[bool]:
    """Per-document val flags; at least one val doc (and one train doc) when there are >= 2 docs."""
    if not 0.0 <= val_fraction < 1.0:
        raise UserError(f"data.val_fraction={val_fraction}: must be in [0, 1)")
    flags = [is_val(i, val_fraction) for i in range(n_docs)]
    if n_docs >= 2 and not any(flags):
        flags[n_docs - 1] = True
    if n_docs >= 2 and all(flags):
        flags[0] = False
    return flags


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 when every id fits, else uint32."""
    return np.dtype(np.uint16 if vocab_size <= 1 << 16 else np.uint32)


# ---- worker side: a raw `tokenizers.Tokenizer` rebuilt from its JSON in each process
_worker: dict = {}


def _init_worker(tokenizer_json: str, eos_id: int, dtype: str) -> None:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_str(tokenizer_json)
    tok.encode_special_tokens = True  # a literal "<|endoftext|>" in a document is text, not eos
    _worker.update(tok=tok, eos=eos_id, dtype=np.dtype(dtype))


def _encode(batch: list[tuple[bool, str]]) -> tuple[np.ndarray, np.ndarray, int]:
    """Encode a batch of (is_val, text): the packed train ids, packed val ids, and text bytes done."""
    encs = _worker["tok"].encode_batch([t for _, t in batch], add_special_tokens=False)
    eos, dtype = _worker["eos"], _worker["dtype"]
    ids: dict[bool, list[int]] = {False: [], True: []}
    for (val, _), enc in zip(batch, encs):
        ids[val].extend(enc.ids)
        ids[val].append(eos)
    packed = [np.array(ids[v], dtype=dtype) for v in (False, True)]
    return packed[0], packed[1], sum(len(t.encode()) for _, t in batch)


def _batches(docs: Sequence[str], flags: Sequence[bool]) -> Iterator[list[tuple[bool, str]]]:
    batch: list[tuple[bool, str]] = []
    size = 0
    for doc, val in zip(docs, flags):
        batch.append((val, doc))
        size += len(doc)
        if size >= BATCH_BYTES:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def _progress():
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(
        TextColumn("tokenizing"), BarColumn(), DownloadColumn(), TimeRemainingColumn(),
        disable=not sys.stderr.isatty(), transient=True,
    )


def _start_pool(num_proc: int, initargs: tuple):
    """A worker pool (fork on Linux); workers tokenize single-threaded, so no rayon-after-fork warning."""
    saved = os.environ.get("TOKENIZERS_PARALLELISM")
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    try:
        method = "fork" if sys.platform == "linux" else "spawn"
        return get_context(method).Pool(num_proc, initializer=_init_worker, initargs=initargs)
    finally:
        if saved is None:
            os.environ.pop("TOKENIZERS_PARALLELISM", None)
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = saved


def _tokenize_to(tmp: Path, docs: Sequence[str], flags: Sequence[bool], tokenizer_json: str,
                 eos_id: int, dtype: np.dtype, num_proc: int) -> dict:
    """Write train.bin / val.bin into `tmp`; return token and byte counts per split."""
    counts = {"train_tokens": 0, "val_tokens": 0}
    total = sum(len(d.encode()) for d in docs)
    args = (tokenizer_json, eos_id, dtype.str)
    with open(tmp / "train.bin", "wb") as ftrain, open(tmp / "val.bin", "wb") as fval, _progress() as bar:
        task = bar.add_task("tokenizing", total=total)

        def write(result: tuple[np.ndarray, np.ndarray, int]) -> None:
            train, val, nbytes = result
            ftrain.write(train.tobytes())
            fval.write(val.tobytes())
            counts["train_tokens"] += len(train)
            counts["val_tokens"] += len(val)
            bar.advance(task, nbytes)

        if num_proc <= 1 or total < MIN_PARALLEL_BYTES:
            _init_worker(*args)
            for batch in _batches(docs, flags):
                write(_encode(batch))
        else:
            with _start_pool(num_proc, args) as pool:
                for result in pool.imap(_encode, _batches(docs, flags)):
                    write(result)
    return counts


def packed_key(corpus_fp: str, tokenizer: PreTrainedTokenizerFast, val_fraction: float) -> str:
    """Cache key of a packed corpus."""
    blob = json.dumps([corpus_fp, tokenizer_fingerprint(tokenizer), float(val_fraction), FORMAT_VERSION])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def pack_corpus(
    documents_fn,
    tokenizer: PreTrainedTokenizerFast,
    *,
    cache_dir: str | Path,
    corpus_fp: str,
    val_fraction: float = 0.05,
    tokenizer_dir: str | Path | None = None,
    num_proc: int | None = None,
) -> tuple[Path, bool]:
    """Return (packed dir, built): reuse `cache_dir/corpus/<key>` if present, else tokenize and write it.

    `documents_fn()` returns the documents (a sequence of strings); it is only called on a cache miss.
    """
    out = Path(cache_dir) / "corpus" / packed_key(corpus_fp, tokenizer, val_fraction)
    if (out / "meta.json").exists():
        return out, False
    eos_id = tokenizer.eos_token_id
    if eos_id is None:
        raise UserError("the tokenizer has no eos token to separate documents")
    docs = documents_fn()
    flags = split_documents(len(docs), val_fraction)
    dtype = token_dtype(len(tokenizer))
    num_proc = num_proc or min(2, os.cpu_count() or 1)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".tmp-{out.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        counts = _tokenize_to(tmp, docs, flags, tokenizer.backend_tokenizer.to_str(), eos_id, dtype, num_proc)
        meta = {
            "format_version": FORMAT_VERSION,
            "dtype": dtype.name,
            **counts,
            "train_bytes": sum(len(d.encode()) for d, v in zip(docs, flags) if not v),
            "val_bytes": sum(len(d.encode()) for d, v in zip(docs, flags) if v),
            "train_docs": flags.count(False),
            "val_docs": flags.count(True),
            "val_fraction": val_fraction,
            "eos_id": eos_id,
            "vocab_size": len(tokenizer),
            "tokenizer_dir": str(tokenizer_dir) if tokenizer_dir is not None else None,
            "corpus_fingerprint": corpus_fp,
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
        try:
            os.replace(tmp, out)
        except OSError:
            if not (out / "meta.json").exists():  # not just a concurrent builder that won the race
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out, True


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
