"""The one JSON Lines reader: records of a `.jsonl` file (or `.jsonl.gz`), one at a time.

It streams, so memory does not grow with the file (pretraining corpora can be far larger than
memory), and every bad line is a one-line `UserError` naming `path:line`.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import zlib
from collections.abc import Iterator
from typing import BinaryIO

from lmforge.errors import UserError


class NotUtf8(UserError):
    """Bytes that are not UTF-8 text (a corpus may skip such files: data.on_decode_error=skip)."""


def open_binary(path: str | os.PathLike) -> BinaryIO:
    """The file's bytes, gunzipped on the fly when its name ends with `.gz`."""
    return gzip.open(path, "rb") if os.fspath(path).lower().endswith(".gz") else open(path, "rb")


def decode_utf8(data: bytes, where: str, base: int = 0) -> str:
    """`data` as text; `NotUtf8` naming `where` and the byte offset (`base` + position) otherwise."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise NotUtf8(f"{where}: not UTF-8 text at byte offset {base + e.start}") from e


@contextlib.contextmanager
def read_errors(path: str | os.PathLike) -> Iterator[None]:
    """Turn errors of reading `path` (not gzip after all, I/O) into one-line `UserError`s."""
    try:
        yield
    except UserError:
        raise
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:  # BadGzipFile is an OSError: first
        raise UserError(f"{path}: not a valid gzip file ({e})") from None
    except OSError as e:
        raise UserError(f"{path}: cannot read: {e.strerror or e}") from None


def iter_jsonl(path: str | os.PathLike) -> Iterator[tuple[int, dict]]:
    """(line number, object) of every non-blank line, in order; a UTF-8 byte-order mark is ignored."""
    with read_errors(path), open_binary(path) as f:
        offset = 0
        first = True
        for lineno, raw in enumerate(f, 1):
            line = decode_utf8(raw, f"{path}:{lineno}", offset)
            offset += len(raw)
            if lineno == 1:
                line = line.removeprefix("\ufeff")
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as e:
                hint = ""
                if first and line.lstrip().startswith("["):
                    hint = " (a JSON array is not supported: write one JSON object per line)"
                what = e.msg.removesuffix(" at")  # "Invalid control character at" would read "at at column"
                raise UserError(f"{path}:{lineno}: malformed JSON: {what} at column {e.colno}{hint}") from None
            if not isinstance(value, dict):
                raise UserError(f"{path}:{lineno}: expected a JSON object per line, got {type(value).__name__}")
            first = False
            yield lineno, value
