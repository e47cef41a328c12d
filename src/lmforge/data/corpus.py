"""Find and read the documents of a text corpus (files, directories, globs, `hf:` datasets) and
split them into train and validation text.

Plain text (any extension) is one document per file; `.jsonl` is one document per line (from a
text field); `.gz` of either is read by its inner extension. Everything streams, so a corpus may be
far larger than memory: JSONL one line at a time, plain text in pieces of ~256 KB (`TextFile`).
Bad input raises a one-line UserError.
"""

from __future__ import annotations

import codecs
import errno
import functools
import glob
import hashlib
import itertools
import json
import logging
import math
import sysconfig
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from lmforge.data.jsonl import iter_jsonl, open_binary, read_errors
from lmforge.data.plaintext import Part, TextFile, mark_last, tail_start
from lmforge.data.splits import in_holdout
from lmforge.errors import UserError

_GLOB_CHARS = set("*?[")
# Directories of the standard library that are not its own source: tests, caches, installed packages.
SKIP_DIRS = {"site-packages", "dist-packages", "__pycache__", "test", "tests", "idle_test"}

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HFSource:
    """A Hugging Face `datasets` source, `hf:NAME[:CONFIG][:SPLIT]` (split only: `hf:NAME::SPLIT`).

    Loaded with `datasets.load_dataset(..., streaming=True)`; a real path for online users only.
    """

    name: str
    config: str | None = None
    split: str = "train"

    def __str__(self) -> str:
        tail = f":{self.config or ''}:{self.split}" if self.config or self.split != "train" else ""
        return f"hf:{self.name}{tail}"


Source = Path | HFSource


def _is_hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def _expand_dir(root: Path) -> list[Path]:
    """All files under `root`, recursively, sorted, skipping hidden files and directories."""
    return sorted(p for p in root.rglob("*") if p.is_file() and not _is_hidden(p, root))


def _parse_hf(entry: str, key: str = "data.paths") -> HFSource:
    parts = entry[3:].split(":")
    if not parts[0] or len(parts) > 3:
        raise UserError(f"{key} entry {entry!r}: expected hf:NAME[:CONFIG][:SPLIT]")
    config = parts[1] if len(parts) > 1 and parts[1] else None
    split = parts[2] if len(parts) > 2 and parts[2] else "train"
    return HFSource(parts[0], config, split)


def resolve_sources(paths: Sequence[str | Path], key: str = "data.paths") -> list[Source]:
    """Expand each entry (file, directory, glob or `hf:` name) into sources, in order, deduplicated;
    errors name `key` (the config key the entries come from)."""
    out: list[Source] = []
    seen: set = set()
    for entry in paths:
        text = str(entry)
        if text.startswith("hf:"):
            found: list[Source] = [_parse_hf(text, key)]
        elif _GLOB_CHARS & set(text):
            found = []
            for match in sorted(glob.glob(str(Path(text).expanduser()), recursive=True)):
                m = Path(match)
                found.extend(_expand_dir(m) if m.is_dir() else [m] if m.is_file() else [])
        else:
            p = Path(text).expanduser()
            found = _expand_dir(p) if p.is_dir() else [p] if p.is_file() else []
        if not found:
            raise UserError(f"{key} entry {text!r} {_why_no_file(Path(text).expanduser())}")
        for s in found:
            if s not in seen:
                seen.add(s)
                out.append(s)
    if not out:
        raise UserError(f"{key}: no input files given")
    return out


def _why_no_file(path: Path) -> str:
    """What is wrong with an entry that gave no file: most often nothing is there, but a link may loop."""
    try:
        path.stat()
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "is a symlink loop (a link that points back to itself)"
    return "matches no file"


def stdlib_dir() -> Path:
    """The directory of the running interpreter's standard library."""
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_files(package: str | None = None) -> list[Path]:
    """The standard library's `.py` files (or those of one of its packages), sorted, without
    `SKIP_DIRS`: the default pretraining corpus and the source of the embedded fine-tuning tasks."""
    root = stdlib_dir()
    base = root / package if package else root
    return sorted(p for p in base.rglob("*.py") if not SKIP_DIRS & set(p.relative_to(root).parts[:-1]))


def corpus_fingerprint(sources: Sequence[Source], **settings: object) -> str:
    """Stable hash of each source's (path, size, mtime_ns) plus the read settings."""
    items = []
    for s in sources:
        if isinstance(s, HFSource):
            items.append([str(s)])
        else:
            st = s.stat()
            items.append([str(s.resolve()), st.st_size, st.st_mtime_ns])
    blob = json.dumps([items, sorted((k, repr(v)) for k, v in settings.items())])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _inner_name(path: Path) -> str:
    name = path.name.lower()
    return name[:-3] if name.endswith(".gz") else name


def _read_jsonl(path: Path, text_field: str) -> Iterator[str]:
    """One document per non-blank line, taken from `text_field`."""
    for lineno, obj in iter_jsonl(path):
        if text_field not in obj:
            raise UserError(f"{path}:{lineno}: no {text_field!r} field (set data.text_field)")
        value = obj[text_field]
        if not isinstance(value, str):
            raise UserError(f"{path}:{lineno}: field {text_field!r} is {type(value).__name__}, not a string")
        yield value


def _read_file(path: Path, text_field: str) -> Iterator[str | TextFile]:
    if _inner_name(path).endswith(".jsonl"):
        yield from _read_jsonl(path, text_field)
    else:
        yield TextFile(path)


def _is_utf8(path: Path) -> bool:
    """Whether every byte of the file is UTF-8 text (read in blocks: any size)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        with read_errors(path), open_binary(path) as f:
            while block := f.read(1 << 20):
                decoder.decode(block)
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return False
    return True


def _hub_unreachable() -> bool:
    """Whether the Hub's host name does not even resolve (no network), unless offline mode is set (then
    `datasets` reads its cache and fails at once): `datasets` would retry for ~30 s before saying so."""
    import os
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    offline = ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    if constants.HF_HUB_OFFLINE or any(os.environ.get(v, "").upper() in ("1", "ON", "YES", "TRUE") for v in offline):
        return False
    try:
        socket.getaddrinfo(urlparse(constants.ENDPOINT).hostname, 443)
    except OSError:
        return True
    return False


def _read_hf(source: HFSource, text_field: str) -> Iterator[str]:
    if _hub_unreachable():
        raise UserError(f"{source}: cannot load dataset: the Hugging Face Hub cannot be reached (no network); "
                        "a dataset already in the cache loads with HF_DATASETS_OFFLINE=1")
    try:
        import datasets

        ds = datasets.load_dataset(source.name, source.config, split=source.split, streaming=True)
    except Exception as e:  # noqa: BLE001 - any loader failure is reported as a bad source
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise UserError(f"{source}: cannot load dataset: {first}") from e
    for i, row in enumerate(ds):
        if text_field not in row:
            raise UserError(f"{source}: row {i} has no {text_field!r} field (set data.text_field)")
        yield row[text_field]


DECODE_POLICIES = ("error", "skip")  # what data.on_decode_error may say of a file that is not UTF-8


def check_decode_policy(on_decode_error: str) -> None:
    """One line naming data.on_decode_error when it is not one of DECODE_POLICIES."""
    if on_decode_error not in DECODE_POLICIES:
        raise UserError(f"data.on_decode_error={on_decode_error}: expected 'error' or 'skip'")


def _documents(sources: Sequence[Source], text_field: str = "text", on_decode_error: str = "error",
               stats: dict | None = None) -> Iterator[str | TextFile]:
    """The non-empty documents of `sources` in order: JSONL and `hf:` texts, and plain-text files
    unread (`TextFile`). See `iter_documents`."""
    check_decode_policy(on_decode_error)
    n_docs = skipped = 0
    for source in sources:
        if isinstance(source, HFSource):
            docs: Iterator[str | TextFile] = _read_hf(source, text_field)
        elif on_decode_error == "skip" and not _is_utf8(source):  # checked first: it yields nothing
            skipped += 1
            continue
        else:
            docs = _read_file(source, text_field)
        for doc in docs:
            blank = doc.is_blank() if isinstance(doc, TextFile) else not doc.strip()
            if not blank:
                n_docs += 1
                yield doc
    if stats is not None:
        stats.update(documents=n_docs, skipped_files=skipped)
    if skipped:
        log.warning("skipped %d file(s) that are not UTF-8 text (data.on_decode_error=skip)", skipped)
    if n_docs == 0:
        raise UserError("the corpus has no non-empty document")


def iter_documents(sources: Sequence[Source], text_field: str = "text", on_decode_error: str = "error",
                   stats: dict | None = None) -> Iterator[str]:
    """Yield the non-empty documents of `sources` in order, each whole.

    on_decode_error="skip" skips files that are not UTF-8 and warns once at the end with the count;
    `stats`, when given, receives {"documents": n, "skipped_files": n}.
    """
    for doc in _documents(sources, text_field, on_decode_error, stats):
        yield doc.text() if isinstance(doc, TextFile) else doc


def _same_source(source: Source) -> object:
    """What identifies a source across spellings: the real file (links and `..` resolved), or the `hf:` name."""
    return source.resolve() if isinstance(source, Path) else str(source)


def _has_text(path: Path, text_field: str, on_decode_error: str) -> bool:
    """Whether the file holds a non-blank document (read up to the first one)."""
    if on_decode_error == "skip" and not _is_utf8(path):
        return False
    for doc in _read_file(path, text_field):
        if not (doc.is_blank() if isinstance(doc, TextFile) else not doc.strip()):
            return True
    return False


def check_val_sources(train: Sequence[Source], val: Sequence[Source], text_field: str = "text",
                      on_decode_error: str = "error", key: str = "data") -> None:
    """One line naming `<key>.val_paths` for a validation file that training also reads (its text would
    leak into training) or that holds no text to validate on (`key`: data, or a mixture's source)."""
    trained = {_same_source(s) for s in train}
    for source in val:
        if _same_source(source) in trained:
            raise UserError(f"{key}.val_paths: {source} is also in {key}.paths (training would read the validation "
                            f"text); keep it out of {key}.paths' files, folders and globs")
        if isinstance(source, Path) and not _has_text(source, text_field, on_decode_error):
            why = "is not UTF-8 text" if on_decode_error == "skip" and not _is_utf8(source) else "is empty or blank"
            raise UserError(f"{key}.val_paths: {source} {why}: no text to validate on")


def _doc_parts(doc: str | TextFile, held_out: bool) -> Iterator[Part]:
    """A whole document as parts (a plain-text file piece by piece), all on one side."""
    if isinstance(doc, TextFile):
        yield from ((text, held_out, last) for text, last in mark_last(doc.pieces()))
    else:
        yield doc, held_out, True


class Corpus:
    """The documents of `sources` read with fixed settings, and their train/validation split.

    With `val_sources` (data.val_paths), validation is their documents, whole, and training every
    document of `sources` (`val_fraction` unused); the two share no file (checked here). Otherwise,
    by document when the corpus has enough of them (at least 1 / val_fraction, so that one or more
    is expected in validation, and one on each side): document i is held out when
    `in_holdout(i, val_fraction)`, which needs no count of the documents (streaming). Otherwise (one file, or a few) by position:
    the last `val_fraction` of each document's text is held out (see `tail_start`). All are
    deterministic and never put the same text in train and validation. `max_docs` caps the documents
    of `sources` only. `key` names the config node in errors (data, or data.sources.<name>).
    """

    def __init__(self, sources: Sequence[Source], text_field: str = "text", on_decode_error: str = "error",
                 val_fraction: float = 0.05, max_docs: int | None = None,
                 val_sources: Sequence[Source] | None = None, key: str = "data") -> None:
        if not 0.0 <= float(val_fraction) < 1.0:
            raise UserError(f"data.val_fraction={val_fraction}: must be in [0, 1)")
        check_decode_policy(on_decode_error)
        self.sources, self.text_field, self.on_decode_error = list(sources), text_field, on_decode_error
        self.val_fraction, self.max_docs = float(val_fraction), max_docs
        self.val_sources = list(val_sources) if val_sources else None
        if self.val_sources:
            check_val_sources(self.sources, self.val_sources, text_field, on_decode_error, key)

    @property
    def has_validation(self) -> bool:
        """Whether any text is held out for validation (val_fraction=0 without val files: none)."""
        return bool(self.val_sources) or self.val_fraction > 0

    @functools.cached_property
    def fingerprint(self) -> str:
        """Hash of the files (path, size, mtime) and of every setting that changes the text or its split:
        the validation files' own hash in place of val_fraction when there are some."""
        split: dict[str, object] = {"val_fraction": self.val_fraction}
        if self.val_sources:
            split = {"val_files": corpus_fingerprint(self.val_sources)}
        return corpus_fingerprint(self.sources, text_field=self.text_field, on_decode_error=self.on_decode_error,
                                  max_docs=self.max_docs, **split)

    def _documents(self) -> Iterator[str | TextFile]:
        docs = _documents(self.sources, self.text_field, self.on_decode_error)
        return itertools.islice(docs, self.max_docs) if self.max_docs else docs

    def documents(self, max_chars: int | None = None) -> Iterator[str]:
        """The non-empty documents in order (at most `max_docs`; never those of `val_sources`), read as
        they are consumed; with `max_chars`, each cut to its first characters (a huge file is not read whole)."""
        for doc in self._documents():
            yield doc.text(max_chars) if isinstance(doc, TextFile) else doc[:max_chars]

    @functools.cached_property
    def split_by(self) -> str:
        """"files" (val_sources given), "document", or "position" when the corpus has too few documents
        to split by document."""
        if self.val_sources:
            return "files"
        if self.val_fraction == 0:
            return "document"
        enough = math.ceil(1 / self.val_fraction)
        sides = set()
        for i, _ in enumerate(self._documents()):  # stops after `enough` documents, or a few more
            sides.add(in_holdout(i, self.val_fraction))
            if len(sides) == 2 and i + 1 >= enough:
                return "document"
        return "position"

    def _train_parts(self) -> Iterator[Part]:
        """With val_sources: every document of `sources`, none held out."""
        for doc in self._documents():
            yield from _doc_parts(doc, False)

    def parts(self) -> Iterator[Part]:
        """(text, held out, ends) in corpus order: each document, or each document's head then its
        tail; a plain-text file comes in pieces, and `ends` marks the last text of each of these.
        With val_sources: the documents of `sources`, then those of `val_sources`, held out."""
        if self.val_sources:
            yield from self._train_parts()
            for doc in _documents(self.val_sources, self.text_field, self.on_decode_error):
                yield from _doc_parts(doc, True)
            return
        by_position = self.split_by == "position"
        for i, doc in enumerate(self._documents()):
            if by_position and isinstance(doc, TextFile):
                yield from doc.split_at(doc.tail_start(self.val_fraction))
            elif not by_position:
                yield from _doc_parts(doc, in_holdout(i, self.val_fraction))
            else:
                cut = tail_start(doc, self.val_fraction)
                if cut > 0:
                    yield doc[:cut], False, True
                if cut < len(doc):
                    yield doc[cut:], True, True

    def train_texts(self) -> Iterator[str]:
        """The text a tokenizer may learn from: never any validation text."""
        parts = self._train_parts() if self.val_sources else self.parts()
        return (text for text, held_out, _ in parts if not held_out)
