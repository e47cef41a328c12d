"""Read small user tables (CSV, TSV, JSON Lines, optionally gzipped) into row dicts.

JSON Lines go through `lmforge.data.jsonl`, the reader the pretraining corpus uses too.

Every row keeps its 1-based source line under the key `LINE` ("_line") so that later
errors (missing label, empty text) can point at `path:line`. Bad input raises `UserError`.
"""

from __future__ import annotations

import csv
import io
import os

from lmforge.data.jsonl import iter_jsonl, open_binary, read_errors
from lmforge.errors import UserError

LINE = "_line"
"""Key of the 1-based source line number in every row returned by `read_rows`."""

SUPPORTED = (".csv", ".tsv", ".jsonl", ".json")


def table_format(path: str | os.PathLike) -> str:
    """The format of `path` from its extension ("csv", "tsv" or "jsonl"; `.gz` stripped)."""
    name = os.fspath(path).lower()
    if name.endswith(".gz"):
        name = name[:-3]
    for ext in SUPPORTED:
        if name.endswith(ext):
            return "jsonl" if ext == ".json" else ext[1:]
    raise UserError(
        f"{path}: unsupported table format; use one of {', '.join(SUPPORTED)} (optionally .gz)"
    )


def check_table(path: str | os.PathLike, key: str = "file") -> None:
    """Cheap check (no parsing) that `path` is an existing file in a supported format."""
    if not os.path.exists(path):
        raise UserError(f"{key}: file not found: {path}")
    if not os.path.isfile(path):
        raise UserError(f"{key}: not a file: {path}")
    table_format(path)


def _read_text(path: str | os.PathLike) -> str:
    """The whole file as text (gunzipped when `.gz`), with a `path:line` error if not UTF-8."""
    with read_errors(path), open_binary(path) as f:
        data = f.read()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        byte = data[e.start]
        raise UserError(
            f"{path}:{line}: not valid UTF-8 (byte {byte:#04x}); save the file as UTF-8"
        ) from None


def _read_delimited(path: str | os.PathLike, text: str, delimiter: str) -> list[dict]:
    """Rows of a CSV/TSV text whose first non-blank record is the header."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    header: list[str] | None = None
    rows: list[dict] = []
    prev_end = 0
    try:
        for record in reader:
            start, prev_end = prev_end + 1, reader.line_num
            if not record or all(not c.strip() for c in record):
                continue
            if header is None:
                header = [c.strip() for c in record]
                dupes = sorted({c for c in header if header.count(c) > 1})
                if dupes or "" in header:
                    what = f"duplicate column(s) {', '.join(dupes)}" if dupes else "an empty column name"
                    raise UserError(f"{path}:{start}: the header has {what}")
                continue
            if len(record) != len(header):
                raise UserError(
                    f"{path}:{start}: expected {len(header)} fields ({', '.join(header)}), got {len(record)}"
                )
            row = dict(zip(header, record))
            row[LINE] = start
            rows.append(row)
    except csv.Error as e:  # named by the line its record starts on: an open quote runs to the end of the file
        why = "a quoted field starts here and is never closed" if "end of data" in str(e) else f"malformed row: {e}"
        raise UserError(f"{path}:{prev_end + 1}: {why}") from None
    if header is None:
        raise UserError(f"{path}: file is empty")
    return rows


def read_rows(path: str | os.PathLike) -> list[dict]:
    """Rows of a `.csv`, `.tsv`, `.jsonl`/`.json` (JSON Lines) file, or a `.gz` of one.

    Each row is a dict of column -> value plus `LINE` ("_line"), its 1-based source line.
    CSV/TSV values are strings; JSON values keep their types. Raises `UserError` for a missing,
    empty, malformed or non-UTF-8 file.
    """
    fmt = table_format(path)
    if not os.path.isfile(path):
        raise UserError(f"file not found: {path}")
    if fmt == "jsonl":
        rows = [{**value, LINE: number} for number, value in iter_jsonl(path)]
        if not rows:
            raise UserError(f"{path}: file is empty")
        return rows
    text = _read_text(path)
    if not text.strip():
        raise UserError(f"{path}: file is empty")
    rows = _read_delimited(path, text, "," if fmt == "csv" else "\t")
    if not rows:
        raise UserError(f"{path}: no rows (only a header or blank lines)")
    return rows


def columns(rows: list[dict]) -> list[str]:
    """The column names present in `rows` (first-seen order, without `LINE`)."""
    seen: dict[str, None] = {}
    for row in rows:
        for key in row:
            if key != LINE:
                seen.setdefault(key, None)
    return list(seen)


def require_columns(
    path: str | os.PathLike, rows: list[dict], names: list[str], keys: list[str] | None = None
) -> None:
    """Raise `UserError` naming the file and the existing columns when a column in `names` is absent.

    `keys` are the config keys that chose each name (e.g. "data.text_column"), for the hint.
    """
    present = columns(rows)
    for i, name in enumerate(names):
        if name not in present:
            hint = f" (set {keys[i]})" if keys else ""
            raise UserError(
                f"{path}: no column '{name}'{hint}; columns are: {', '.join(map(_shown, present)) or '(none)'}"
                f"{_delimiter_hint(path, present)}"
            )


def _shown(column: str) -> str:
    """A column name as printed: quoted when it holds a tab, which would read as a space."""
    return repr(column) if "\t" in column else column


def _delimiter_hint(path: str | os.PathLike, present: list[str]) -> str:
    """A hint when the whole header landed in one column that holds the other format's delimiter."""
    if len(present) != 1:
        return ""
    fmt = table_format(path)
    if fmt == "csv" and "\t" in present[0]:
        return "; the file looks tab-separated: name it .tsv"
    if fmt == "tsv" and "," in present[0]:
        return "; the file looks comma-separated: name it .csv"
    return ""
