"""Folders written by `lmforge prepare`, read as corpora: their JSONL.gz shards are the documents; the
`stats.json` beside them is a record of the prepare, not text, and a folder whose prepare has not finished
(no `.prepared` marker yet) is refused rather than read half-written."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from lmforge.data.corpus import Source, resolve_sources
from lmforge.errors import UserError

MARKER, WORK, STATS = ".prepared", ".prepare", "stats.json"


def _refuse_unfinished(folder: Path, key: str) -> None:
    if (folder / WORK).is_dir() and not (folder / MARKER).is_file():
        raise UserError(f"{key}: {folder} is the output of an unfinished lmforge prepare (run the same prepare "
                        "again to finish it)")


def resolve_corpus(paths: Sequence[str | Path], key: str = "data.paths") -> list[Source]:
    """`resolve_sources(paths)`, without the records of finished prepare folders; a `UserError` naming a
    folder whose prepare is unfinished."""
    for entry in paths:
        if not str(entry).startswith("hf:") and Path(entry).expanduser().is_dir():
            _refuse_unfinished(Path(entry).expanduser(), key)
    kept = []
    for source in resolve_sources(paths, key):
        if isinstance(source, Path):
            _refuse_unfinished(source.parent, key)
            if source.name == STATS and (source.parent / MARKER).is_file():
                continue
        kept.append(source)
    return kept
