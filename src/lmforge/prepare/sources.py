"""The inputs of a prepare: globs, files and folders resolved to files, each read by the datatrove reader
of its kind (by suffix, or the one `prepare.reader.format` names): WARC/WET/ARC archives (gzipped or not),
JSON Lines, Parquet, or plain text (one file, one document)."""

from __future__ import annotations

import glob
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, Optional

from datatrove.pipeline.readers import JsonlReader, ParquetReader, WarcReader
from datatrove.pipeline.readers.base import BaseDiskReader

from lmforge.errors import UserError

Format = Literal["warc", "jsonl", "parquet", "text"]
_SUFFIXES = {"warc": (".warc", ".wet", ".arc"), "jsonl": (".jsonl", ".json", ".ndjson"), "parquet": (".parquet",)}
HTML_TYPES = ("text/html", "application/xhtml+xml")


def format_of(path: Path) -> Format:
    """The kind of an input by its name (`.gz`, `.zst` looked through); anything else is plain text."""
    name = path.name.lower().removesuffix(".gz").removesuffix(".zst")
    for kind, suffixes in _SUFFIXES.items():
        if name.endswith(suffixes):
            return kind
    return "text"


def resolve_inputs(inputs: Sequence[str]) -> list[Path]:
    """Every file that `inputs` (files, folders, globs) names, sorted within each entry; an entry that
    matches nothing is a `UserError` naming it."""
    files: list[Path] = []
    for entry in inputs:
        matches = [Path(m) for m in sorted(glob.glob(str(Path(entry).expanduser()), recursive=True))]
        found = []
        for match in matches:
            found += sorted(p for p in match.rglob("*") if p.is_file() and not p.name.startswith(".")) \
                if match.is_dir() else [match]
        if not found:
            raise UserError(f"inputs entry {entry!r} matches no file")
        files += [f.resolve() for f in found if f.resolve() not in files]
    return files


class Reader:
    """How inputs are read: `format` (null: by suffix), the text field of JSONL/Parquet rows, and what a
    WARC record that is not HTML does (`skip`: counted and left out; `error`: stops with its file)."""

    def __init__(self, format: Optional[Format] = None, text_key: str = "text",
                 non_html: Literal["skip", "error"] = "skip") -> None:
        self.format, self.text_key, self.non_html = format, text_key, non_html

    def readers(self, files: Sequence[Path], paths_dir: Path) -> list[BaseDiskReader]:
        """One datatrove reader per kind of input, each given its files through a paths file (under
        `paths_dir`); chained in one pipeline, they read every file once over all tasks."""
        by_kind: dict[str, list[Path]] = {}
        for f in files:
            by_kind.setdefault(self.format or format_of(f), []).append(f)
        readers = []
        for kind, paths in by_kind.items():
            listing = paths_dir / f"{kind}.txt"
            listing.write_text("".join(f"{str(p).lstrip('/')}\n" for p in paths))
            common = dict(data_folder="/", paths_file=str(listing), text_key=self.text_key)
            if kind == "warc":
                readers.append(HtmlRecords(non_html=self.non_html, data_folder="/", paths_file=str(listing)))
            elif kind == "jsonl":
                readers.append(JsonlReader(**common))
            elif kind == "parquet":
                readers.append(ParquetReader(**common))
            else:
                readers.append(TextFiles(data_folder="/", paths_file=str(listing)))
        return readers


class HtmlRecords(WarcReader):
    """The HTML responses (WARC/ARC) and text conversions (WET) of an archive, each a document marked
    `html` (extracted by the next step) or not; other records are counted as skipped, or refused."""

    name = "🕷 Web archive"

    def __init__(self, non_html: str = "skip", **kwargs) -> None:
        super().__init__(**kwargs)
        self.non_html = non_html

    def read_file(self, filepath: str):
        where = "/" + filepath.lstrip("/")
        # Undecompressed: warcio reads gzip members itself, so a record cut short shows.
        with self.data_folder.open(filepath, "rb", compression=None) as f:
            for ri, record in self._records(f, where):
                with self.track_time():
                    document = self._document(record, where, ri)
                    record.raw_stream.read()  # the rest of a record left unread
                    # getattr: warcio's LimitReader counts the bytes still owed; other streams have no limit
                    if getattr(record.raw_stream, "limit", 0) > 0:
                        raise UserError(f"{where}: record {ri} is cut short: the archive is truncated")
                if document is not None:
                    yield document
        if filepath.endswith(".gz"):  # a last gzip member cut inside its headers ends warcio's loop silently
            try:
                with self.data_folder.open(filepath, "rb", compression="gzip") as whole:
                    while whole.read(1 << 22):
                        pass
            except (EOFError, OSError, zlib.error) as exc:
                raise UserError(f"{where}: not a readable web archive (truncated or corrupt?): {exc}") from None

    @staticmethod
    def _records(f, where: str):
        """(index, record) of each record; any failure to parse one is a `UserError` naming the file."""
        from warcio.archiveiterator import ArchiveIterator

        records = enumerate(ArchiveIterator(f))
        while True:
            try:
                item = next(records)
            except StopIteration:
                return
            except Exception as exc:  # noqa: BLE001 - warcio fails in many ways on a damaged archive
                reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise UserError(f"{where}: not a readable web archive (truncated or corrupt?): {reason}") from None
            yield item

    def _document(self, record, where: str, index: int):
        kind = record.rec_type
        if kind not in ("response", "conversion"):  # requests, metadata, warcinfo: not pages
            return None
        if kind == "response" and record.http_headers is None and record.format != "arc":
            self.stat_update("skipped_not_http")
            return None
        payload_type = (record.rec_headers.get_header("WARC-Identified-Payload-Type")
                        or (record.http_headers.get_header("Content-Type") if record.http_headers else None)
                        or ("text/plain" if kind == "conversion" else "text/html"))
        mime = payload_type.split(";")[0].strip().lower()
        is_html = mime in HTML_TYPES
        if not is_html and not (kind == "conversion" and mime == "text/plain"):
            url = record.rec_headers.get_header("WARC-Target-URI") or record.rec_headers.get_header("uri")
            if self.non_html == "error":
                raise UserError(f"{where}: record {index} ({url}) is {mime}, not HTML (prepare.reader.non_html="
                                "skip leaves such records out)")
            self.stat_update("skipped_not_html")
            return None
        data = record.content_stream().read()
        text = data.decode("utf-8", errors="replace")
        headers = record.rec_headers
        url = headers.get_header("WARC-Target-URI") or headers.get_header("uri")
        record_id = headers.get_header("WARC-Record-ID") or f"{where}#{index}"
        date = headers.get_header("WARC-Date") or headers.get_header("archive-date")
        return self.get_document_from_dict({"text": text, "id": record_id, "url": url, "date": date,
                                            "html": is_html}, where, index)


class TextFiles(BaseDiskReader):
    """Plain-text files, one document each (its path as id)."""

    name = "📄 Text files"

    def read_file(self, filepath: str):
        with self.data_folder.open(filepath, "rt", encoding="utf-8", errors="replace") as f:
            with self.track_time():
                document = self.get_document_from_dict({"text": f.read(), "id": filepath}, filepath, 0)
        if document is not None:
            yield document
