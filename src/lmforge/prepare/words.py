"""Word and sentence splitting for datatrove's quality filters and MinHash shingles without a model.

datatrove splits English with spaCy, which is not a dependency here; these rules (a word is a run of
letters, digits or an apostrophe; a sentence ends with terminal punctuation or a line break) need nothing
downloaded and are what the Gopher/C4/FineWeb rules count on for space-separated languages."""

from __future__ import annotations

import re

from datatrove.utils.word_tokenizers import WordTokenizer

_WORD = re.compile(r"\w+(?:['’]\w+)*|[^\w\s]+")
_SENTENCE = re.compile(r"[^.!?。！？\n]+(?:[.!?。！？]+[\"'”’)]*|\n|$)")


class PlainWords(WordTokenizer):
    """Words and punctuation runs by a regular expression; sentences end at . ! ? or a line break."""

    def __init__(self) -> None:
        super().__init__()

    def word_tokenize(self, text: str) -> list[str]:
        return _WORD.findall(text)

    def sent_tokenize(self, text: str) -> list[str]:
        return [s.strip() for s in _SENTENCE.findall(text) if s.strip()]

    def span_tokenize(self, text: str) -> list[tuple[int, int]]:
        return [m.span() for m in _SENTENCE.finditer(text) if m.group().strip()]

    def __eq__(self, other: object) -> bool:  # one cache entry in datatrove's tokenizer cache
        return isinstance(other, PlainWords)

    def __hash__(self) -> int:
        return hash(PlainWords)
