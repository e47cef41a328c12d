"""A plain-text file as one document, read in pieces so that it may be larger than memory, and
where its held-out tail starts when a corpus is split by position (`tail_start`)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from pathlib import Path

from lmforge.data.jsonl import decode_utf8, open_binary, read_errors

Part = tuple[str, bool, bool]  # (text, held out, ends: eos follows) of a corpus in order
PIECE_BYTES = 1 << 18  # a plain-text file is read in pieces of about this size (~4 per packing batch)


def _last_safe_cut(data: bytearray, start: int) -> int:
    """The index of the last newline in `data[start:]` that follows a character other than whitespace
    (a cut just before it), else 0."""
    i = len(data)
    while (i := data.rfind(b"\n", max(start, 1), i)) > 0:
        j = i - 1
        while j > 0 and 0x80 <= data[j] < 0xC0 and i - j < 4:  # back to the start of that character
            j -= 1
        previous = bytes(data[j:i]).decode("utf-8", errors="replace")
        if len(previous) == 1 and previous != "\ufffd" and not previous.isspace():
            return i
    return 0


class TextFile:
    """A plain-text file, one document, read in pieces so that it may be larger than memory.

    A piece ends just before a newline that follows a character other than whitespace: GPT-2's
    pre-tokenizer always splits there (a run of non-space characters ends, the newline starts the next
    pre-token), so the pieces of a file encode to the ids of its whole text (packing joins them for
    other tokenizers). A file with no such place (one long line) is one piece."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _raw_pieces(self) -> Iterator[tuple[int, bytes]]:
        """(byte offset, bytes) of each piece, in order."""
        with read_errors(self.path), open_binary(self.path) as f:
            buffer, offset, scanned = bytearray(f.read(PIECE_BYTES)), 0, 0
            while block := f.read(PIECE_BYTES):  # more follows: cut what is read so far
                if cut := _last_safe_cut(buffer, scanned):  # only the bytes not searched yet
                    yield offset, bytes(buffer[:cut])
                    offset += cut
                    del buffer[:cut]
                scanned = len(buffer)
                buffer += block
            yield offset, bytes(buffer)

    def pieces(self) -> Iterator[str]:
        """The text, piece by piece (a `NotUtf8` error names the file and the byte offset)."""
        for offset, data in self._raw_pieces():
            yield decode_utf8(data, str(self.path), offset)

    def text(self, max_chars: int | None = None) -> str:
        """The whole text, or (`max_chars`) its first characters, reading no further."""
        out, n = [], 0
        for piece in self.pieces():
            out.append(piece)
            n += len(piece)
            if max_chars is not None and n >= max_chars:
                break
        return "".join(out)[:max_chars]

    def is_blank(self) -> bool:
        """Whether the file holds only whitespace (read until its first other character)."""
        return not any(piece.strip() for piece in self.pieces())

    def split_at(self, start: int) -> Iterator[Part]:
        """(text, held out, ends): the pieces before character `start`, then the rest held out (the piece
        holding `start` cut there); `ends` marks the last text of each side."""
        end = 0
        for text, last in mark_last(self.pieces()):
            begin, end = end, end + len(text)
            if end <= start:
                yield text, False, end == start or last
            elif begin >= start:
                yield text, True, last
            else:
                yield text[:start - begin], False, True
                yield text[start - begin:], True, last

    def tail_start(self, fraction: float) -> int:
        """`tail_start` of the whole text, read twice: once for its length, then the tail's region."""
        table = []  # (byte offset, bytes, characters) of each piece
        for offset, data in self._raw_pieces():
            table.append((offset, len(data), len(decode_utf8(data, str(self.path), offset))))
        starts = list(itertools.accumulate((chars for _, _, chars in table), initial=0))
        lo, cut = _tail_window(starts[-1], fraction)
        with read_errors(self.path), open_binary(self.path) as f:
            for i in reversed(range(len(table))):
                if starts[i] < cut and starts[i + 1] > lo:
                    offset, size, _ = table[i]
                    f.seek(offset)
                    text = decode_utf8(f.read(size), str(self.path), offset)
                    found = text.rfind("\n", max(0, lo - starts[i]), cut - starts[i])
                    if found >= 0:
                        return starts[i] + found + 1
        return cut


def mark_last(items: Iterator[str]) -> Iterator[tuple[str, bool]]:
    """(item, whether it is the last one)."""
    items = iter(items)
    previous = next(items, None)
    for item in items:
        yield previous, False
        previous = item
    if previous is not None:
        yield previous, True


def _tail_window(length: int, fraction: float) -> tuple[int, int]:
    """(lo, cut): the held-out tail of a text of `length` characters starts at the last line start in
    [lo, cut], else at cut; cut leaves its last `fraction` out, lo is one tail's length before it."""
    n_tail = math.ceil(length * fraction)
    cut = length - n_tail
    return max(0, cut - n_tail), cut


def tail_start(text: str, fraction: float) -> int:
    """Where the held-out tail of `text` begins: its last `fraction` of characters, moved back to
    the start of a line when one begins within another tail's length."""
    lo, cut = _tail_window(len(text), fraction)
    return text.rfind("\n", lo, cut) + 1 or cut
