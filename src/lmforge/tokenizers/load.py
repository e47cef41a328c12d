"""Get the tokenizer a run asks for: a pretrained directory, the byte tokenizer, or a cached BPE."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable
from pathlib import Path

from transformers import PreTrainedTokenizerFast

from lmforge.errors import UserError
from lmforge.tokenizers.build import EOS, byte_tokenizer, train_bpe

FORMAT_VERSION = 1
KINDS = ("bpe", "bytes", "pretrained")
_HUB_NAME = re.compile(r"^[\w.-]+(/[\w.-]+)?$")


def tokenizer_fingerprint(tokenizer: PreTrainedTokenizerFast) -> str:
    """Hash of the tokenizer's full `tokenizer.json` serialization (vocab, merges, specials)."""
    return hashlib.sha256(tokenizer.backend_tokenizer.to_str().encode()).hexdigest()[:16]


def _auto(path: str | Path) -> PreTrainedTokenizerFast:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path))


def _load_pretrained(path: str | Path | None) -> tuple[PreTrainedTokenizerFast, Path]:
    """Load any HF tokenizer dir (or hub name, online); make sure it has eos and pad tokens."""
    if not path:
        raise UserError("tokenizer.path is required when tokenizer.kind=pretrained")
    p = Path(path).expanduser()
    if not p.exists() and not _HUB_NAME.match(str(path)):
        raise UserError(f"tokenizer.path={path}: no such directory")
    try:
        tok = _auto(p if p.exists() else path)
    except Exception as e:  # noqa: BLE001 - any loader failure is a bad path for the user
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise UserError(f"tokenizer.path={path}: cannot load a tokenizer: {first}") from e
    if not getattr(tok, "is_fast", True):
        raise UserError(f"tokenizer.path={path}: not a fast (Rust) tokenizer")
    if tok.eos_token is None:
        tok.add_special_tokens({"eos_token": EOS})
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok, p


def load_tokenizer(
    kind: str,
    *,
    vocab_size: int | None = None,
    path: str | Path | None = None,
    cache_dir: str | Path = ".cache",
    documents_fn: Callable[[], Iterable[str]] | None = None,
    fingerprint: str = "",
) -> tuple[PreTrainedTokenizerFast, Path]:
    """Return (tokenizer, its directory) for kind "bpe", "bytes" or "pretrained".

    "bpe" trains on `documents_fn()` unless a tokenizer already sits at `path` (when given) or at
    `cache_dir/tokenizers/<key>`, key = hash(corpus `fingerprint`, vocab_size, kind, format version).
    """
    if kind not in KINDS:
        raise UserError(f"tokenizer.kind={kind}: expected one of {', '.join(KINDS)}")
    if kind == "pretrained":
        return _load_pretrained(path)
    if kind == "bytes":
        out = Path(path).expanduser() if path else Path(cache_dir) / "tokenizers" / f"bytes-v{FORMAT_VERSION}"
        if (out / "tokenizer.json").exists():
            return _auto(out), out
        return byte_tokenizer(out), out
    if vocab_size is None:
        raise UserError("tokenizer.vocab_size is required when tokenizer.kind=bpe")
    vocab_size = int(vocab_size)
    if path:
        out = Path(path).expanduser()
    else:
        key = json.dumps([fingerprint, vocab_size, kind, FORMAT_VERSION])
        out = Path(cache_dir) / "tokenizers" / f"bpe{vocab_size}-{hashlib.sha256(key.encode()).hexdigest()[:16]}"
    if (out / "tokenizer.json").exists():
        return _auto(out), out
    if documents_fn is None:
        raise UserError(f"{out}: no tokenizer there and no documents to train one on")
    return train_bpe(documents_fn(), vocab_size, out), out
