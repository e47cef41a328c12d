"""Transcripts for speech recognition: one normal form (lower case, numbers as written words, no
punctuation but the apostrophes inside words, single spaces) and the character vocabulary of a CTC
model built from the training transcripts, as a Wav2Vec2CTCTokenizer (saved with the run, shipped
with an export)."""

from __future__ import annotations

import json
import re
import tempfile
import unicodedata
from pathlib import Path
from typing import Any, Iterable

BLANK = "<pad>"  # the CTC blank is the tokenizer's pad token (id 0): what Wav2Vec2ForCTC expects
UNKNOWN = "<unk>"
WORD_DELIMITER = "|"  # a space in the transcript

_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
         "sixteen seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_SCALES = ((10**9, "billion"), (10**6, "million"), (1000, "thousand"), (100, "hundred"))


def number_words(n: int) -> str:
    """A non-negative integer as English words: 42 -> "forty two", 1905 -> "one thousand nine hundred five"."""
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    for scale, name in _SCALES:
        if n >= scale:
            head, rest = divmod(n, scale)
            return f"{number_words(head)} {name}" + ("" if rest == 0 else " " + number_words(rest))
    raise AssertionError(n)


def _spell(match: re.Match) -> str:
    whole, fraction = match.group(1), match.group(2)
    if len(whole) > 12:  # an id or a phone number: digit by digit
        return " ".join(_ONES[int(d)] for d in whole)
    words = number_words(int(whole))
    if fraction:
        words += " point " + " ".join(_ONES[int(d)] for d in fraction)
    return f" {words} "


def normalise(text: str) -> str:
    """The normal form of a transcript: "Call 911, Dr. O'Neil!" -> "call nine hundred eleven dr o'neil"."""
    text = unicodedata.normalize("NFKC", text).lower().replace("’", "'")
    text = re.sub(r"(?<=\d),(?=\d{3}\b)", "", text)  # 1,000 -> 1000
    text = re.sub(r"(\d+)(?:\.(\d+))?", _spell, text)
    text = re.sub(r"[^\w' ]|_", " ", text)  # punctuation, symbols: word breaks
    text = re.sub(r"(?<!\w)'|'(?!\w)", " ", text)  # quotes, not the apostrophes inside words
    return " ".join(text.split())


def characters(transcripts: Iterable[str]) -> list[str]:
    """The sorted characters of normalised transcripts, the space excepted (it is the word delimiter)."""
    return sorted({c for text in transcripts for c in text} - {" "})


def ctc_tokenizer(chars: list[str]) -> Any:
    """A Wav2Vec2CTCTokenizer over `chars`: blank (pad) 0, unknown 1, word delimiter 2, then the characters;
    no bos/eos (a CTC model emits neither)."""
    from transformers import Wav2Vec2CTCTokenizer

    vocab = {BLANK: 0, UNKNOWN: 1, WORD_DELIMITER: 2, **{c: i + 3 for i, c in enumerate(chars)}}
    with tempfile.TemporaryDirectory() as folder:  # the class reads its vocabulary from a file
        vocab_file = Path(folder) / "vocab.json"
        vocab_file.write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
        return Wav2Vec2CTCTokenizer(str(vocab_file), unk_token=UNKNOWN, pad_token=BLANK,
                                    word_delimiter_token=WORD_DELIMITER, bos_token=None, eos_token=None)
