"""Folders written by `lmforge prepare`, read as corpora: their JSONL.gz shards are the documents; the
`stats.json` beside them is a record of the prepare, not text, and a folder whose prepare has not finished
(no `.prepared` marker yet) is refused rather than read half-written."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from lmforge.errors import UserError

MARKER, WORK, STATS = ".prepared", ".prepare", "stats.json"


def prepared_documents(sources: Sequence, key: str = "data.paths") -> list:
    """`sources` without the records of finished prepare folders; a `UserError` naming a folder whose
    prepare is unfinished."""
    kept = []
    for source in sources:
        folder = source.parent if isinstance(source, Path) else None
        if folder is not None and (folder / WORK).is_dir() and not (folder / MARKER).is_file():
            raise UserError(f"{key}: {folder} is the output of an unfinished lmforge prepare (run the same "
                            "prepare again to finish it)")
        if folder is not None and source.name == STATS and (folder / MARKER).is_file():
            continue
        kept.append(source)
    return kept
