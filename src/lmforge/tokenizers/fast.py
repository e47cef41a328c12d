"""Encode corpora fast: a byte-level BPE saved by Hugging Face `tokenizers`, run by tiktoken.

tiktoken encodes the same merges ~3.7x faster than `tokenizers` (inside the packer: benchmarks/README.md) and
gives the same ids (tests check the whole stdlib corpus), so packing uses it whenever the
tokenizer converts: a BPE over GPT-2's byte alphabet with GPT-2's pre-tokenizer regex, ids that
grow with merge order, every other token a single byte, and only special added tokens. Anything
else (another pre-tokenizer, a normalizer, byte fallback...) keeps the Hugging Face encoder.
Hugging Face stays the saved format: runs, exports and AutoTokenizer load `tokenizer.json`.
"""

from __future__ import annotations

import json
from typing import Any


def byte_alphabet() -> list[str]:
    """The 256 printable characters GPT-2's byte-level scheme uses for bytes 0..255, in byte order."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = {}, 0
    for b in range(256):
        if b in keep:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in range(256)]



HF_SLICE_CHARS = 1 << 16  # text per Hugging Face `encode_batch` call
# GPT-2's pre-tokenizer: the regex of `tokenizers`' ByteLevel(use_regex=True), in tiktoken's syntax.
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


def _gpt2_pre_tokenized(spec: dict) -> bool:
    """Whether the text reaches the model as GPT-2 cuts it: its byte-level regex, no normalizer, no
    prefix space."""
    pre = spec.get("pre_tokenizer") or {}
    return (spec.get("normalizer") is None and pre.get("type") == "ByteLevel" and not pre.get("add_prefix_space")
            and pre.get("use_regex", True))


def _byte_level_ok(spec: dict) -> bool:
    model = spec.get("model") or {}
    return (
        model.get("type") == "BPE"
        and _gpt2_pre_tokenized(spec)
        and not any(model.get(k) for k in ("dropout", "continuing_subword_prefix", "end_of_word_suffix",
                                           "byte_fallback"))
    )


def encodes_pieces_alike(tokenizer_json: str) -> bool:
    """Whether text cut just before a newline that follows a character other than whitespace encodes,
    piece by piece, to the ids of the whole: so with GPT-2's byte-level pre-tokenizer (its regex always
    splits there, and no merge crosses a split), no normalizer, no prefix space and no added token
    holding a newline; not with others (e.g. SentencePiece's, which marks the start of each text)."""
    spec = json.loads(tokenizer_json)
    return _gpt2_pre_tokenized(spec) and not any("\n" in t["content"] for t in spec.get("added_tokens") or [])


def mergeable_ranks(tokenizer_json: str) -> dict[bytes, int] | None:
    """{token bytes: id} of a convertible byte-level BPE (its specials left out), else None."""
    spec = json.loads(tokenizer_json)
    if not _byte_level_ok(spec):
        return None
    added = spec.get("added_tokens") or []
    if any(not t.get("special") for t in added):
        return None  # Hugging Face cuts non-special added tokens out of the text first
    specials = {t["content"] for t in added}
    to_byte = {ch: b for b, ch in enumerate(byte_alphabet())}
    vocab: dict[str, int] = spec["model"]["vocab"]
    ranks: dict[bytes, int] = {}
    for token, index in vocab.items():
        if token in specials:
            continue
        if any(ch not in to_byte for ch in token):
            return None
        ranks[bytes(to_byte[ch] for ch in token)] = index
    if len(ranks) != len(set(ranks.values())) or any(bytes([b]) not in ranks for b in range(256)):
        return None
    merged, last = set(), -1
    for merge in spec["model"].get("merges") or []:
        left, right = merge.split(" ") if isinstance(merge, str) else merge
        index = vocab.get(left + right)
        if index is None or index <= last:
            return None  # tiktoken merges by rank: ids must follow merge order
        merged.add(left + right)
        last = index
    if any(len(tok) > 1 and tok not in merged for tok in vocab if tok not in specials):
        return None  # a token no merge builds: tiktoken could still emit it
    return ranks


def to_tiktoken(tokenizer_json: str) -> Any:
    """A `tiktoken.Encoding` with the ids of this Hugging Face tokenizer, or None if it does not
    convert (or tiktoken is missing). It has no special tokens: `encode_ordinary` treats a literal
    "<|endoftext|>" as text, as packing wants."""
    ranks = mergeable_ranks(tokenizer_json)
    if ranks is None:
        return None
    try:
        import tiktoken
    except ImportError:
        return None
    return tiktoken.Encoding("lmforge-bpe", pat_str=GPT2_PATTERN, mergeable_ranks=ranks, special_tokens={})


class TextEncoder:
    """Text -> ids, special tokens written in the text encoded as plain text: tiktoken when the
    tokenizer converts (and `fast`), else the Hugging Face tokenizer itself."""

    def __init__(self, tokenizer_json: str, fast: bool = True) -> None:
        self._tiktoken = to_tiktoken(tokenizer_json) if fast else None
        self._hf = None
        if self._tiktoken is None:
            from tokenizers import Tokenizer

            self._hf = Tokenizer.from_str(tokenizer_json)
            self._hf.encode_special_tokens = True  # a literal "<|endoftext|>" in a document is text

    @property
    def name(self) -> str:
        return "tiktoken" if self._tiktoken is not None else "tokenizers"

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        if self._tiktoken is not None:
            return [self._tiktoken.encode_ordinary(t) for t in texts]
        out: list[list[int]] = []
        start = size = 0
        for end, text in enumerate(texts, 1):  # in slices: a Hugging Face Encoding costs ~100 bytes a token
            size += len(text)
            if size >= HF_SLICE_CHARS or end == len(texts):
                out += [e.ids for e in self._hf.encode_batch(texts[start:end], add_special_tokens=False)]
                start, size = end, 0
        return out
