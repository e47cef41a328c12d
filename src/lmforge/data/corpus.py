"""Find and read the documents of a text corpus: files, directories, globs, or `hf:` datasets.

Plain text (any extension) is one document per file; `.jsonl` is one document per line (from a
text field); `.gz` of either is read by its inner extension. Bad input raises a one-line UserError.
"""

from __future__ import annotations

import glob
import gzip
import hashlib
import json
import logging
import sysconfig
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from lmforge.errors import UserError

_GLOB_CHARS = set("*?[")

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


def _parse_hf(entry: str) -> HFSource:
    parts = entry[3:].split(":")
    if not parts[0] or len(parts) > 3:
        raise UserError(f"data.paths entry {entry!r}: expected hf:NAME[:CONFIG][:SPLIT]")
    config = parts[1] if len(parts) > 1 and parts[1] else None
    split = parts[2] if len(parts) > 2 and parts[2] else "train"
    return HFSource(parts[0], config, split)


def resolve_sources(paths: Sequence[str | Path]) -> list[Source]:
    """Expand each entry (file, directory, glob or `hf:` name) into sources, in order, deduplicated."""
    out: list[Source] = []
    seen: set = set()
    for entry in paths:
        text = str(entry)
        if text.startswith("hf:"):
            found: list[Source] = [_parse_hf(text)]
        elif _GLOB_CHARS & set(text):
            found = []
            for match in sorted(glob.glob(str(Path(text).expanduser()), recursive=True)):
                m = Path(match)
                found.extend(_expand_dir(m) if m.is_dir() else [m] if m.is_file() else [])
        else:
            p = Path(text).expanduser()
            found = _expand_dir(p) if p.is_dir() else [p] if p.is_file() else []
        if not found:
            raise UserError(f"data.paths entry {text!r} matches no file")
        for s in found:
            if s not in seen:
                seen.add(s)
                out.append(s)
    if not out:
        raise UserError("data.paths: no input files given")
    return out


def stdlib_files() -> list[Path]:
    """The interpreter's standard-library `.py` files (no site-packages, no test dirs), sorted."""
    root = Path(sysconfig.get_paths()["stdlib"])
    skip = {"site-packages", "dist-packages", "test", "tests", "__pycache__"}
    return sorted(p for p in root.rglob("*.py") if not skip & set(p.relative_to(root).parts[:-1]))


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


def _open(path: Path):
    return gzip.open(path, "rb") if path.name.lower().endswith(".gz") else open(path, "rb")


def _decode(data: bytes, where: str, base: int = 0) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _NotUtf8(f"{where}: not UTF-8 text at byte offset {base + e.start}") from e


class _NotUtf8(UserError):
    """A file has bytes that are not UTF-8 (skippable with on_decode_error=skip)."""


def _read_jsonl(path: Path, text_field: str) -> Iterator[str]:
    """One document per non-blank line, taken from `text_field`."""
    with _open(path) as f:
        offset = 0
        for lineno, raw in enumerate(f, 1):
            line = _decode(raw, f"{path}:{lineno}", offset)
            offset += len(raw)
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise UserError(f"{path}:{lineno}: not a JSON object ({e.msg})") from None
            if not isinstance(obj, dict) or text_field not in obj:
                raise UserError(f"{path}:{lineno}: no {text_field!r} field (set data.text_field)")
            value = obj[text_field]
            if not isinstance(value, str):
                raise UserError(f"{path}:{lineno}: field {text_field!r} is {type(value).__name__}, not a string")
            yield value


def _read_file(path: Path, text_field: str) -> Iterator[str]:
    try:
        if _inner_name(path).endswith(".jsonl"):
            yield from _read_jsonl(path, text_field)
        else:
            with _open(path) as f:
                yield _decode(f.read(), str(path))
    except (gzip.BadGzipFile, EOFError) as e:
        raise UserError(f"{path}: not a valid gzip file ({e})") from None
    except OSError as e:
        raise UserError(f"{path}: cannot read: {e.strerror or e}") from None


def _read_hf(source: HFSource, text_field: str) -> Iterator[str]:
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


def iter_documents(
    sources: Sequence[Source],
    text_field: str = "text",
    on_decode_error: str = "error",
    stats: dict | None = None,
) -> Iterator[str]:
    """Yield the non-empty documents of `sources` in order.

    on_decode_error="skip" skips files that are not UTF-8 and warns once at the end with the count;
    `stats`, when given, receives {"documents": n, "skipped_files": n}.
    """
    if on_decode_error not in ("error", "skip"):
        raise UserError(f"data.on_decode_error={on_decode_error}: expected 'error' or 'skip'")
    n_docs = skipped = 0
    for source in sources:
        if isinstance(source, HFSource):
            docs: list[str] | Iterator[str] = _read_hf(source, text_field)
        else:
            try:  # read a whole file first, so a skipped file contributes no documents
                docs = list(_read_file(source, text_field))
            except _NotUtf8:
                if on_decode_error == "error":
                    raise
                skipped += 1
                continue
        for doc in docs:
            if doc.strip():
                n_docs += 1
                yield doc
    if stats is not None:
        stats.update(documents=n_docs, skipped_files=skipped)
    if skipped:
        log.warning("skipped %d file(s) that are not UTF-8 text (data.on_decode_error=skip)", skipped)
    if n_docs == 0:
        raise UserError("the corpus has no non-empty document")
