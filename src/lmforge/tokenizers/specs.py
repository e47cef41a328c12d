"""The `tokenizer` config group: which tokenizer a text corpus uses, as `_target_` nodes.

    tokenizer=bpe         BPE(vocab_size, path)   a byte-level BPE trained on the corpus's train text
    tokenizer=bytes       Bytes(path)             raw UTF-8 bytes, nothing to train
    tokenizer=pretrained  Pretrained(path)        any Hugging Face tokenizer directory (or hub name)

Each is a small value that `TextDataModule` calls once, `load_or_train(cache_dir, texts,
fingerprint)`, to get (tokenizer, its directory). Their signatures are the schema; the defaults
live in conf/tokenizer/*.yaml.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable
from pathlib import Path

from transformers import PreTrainedTokenizerFast

from lmforge.errors import UserError
from lmforge.tokenizers.build import EOS, byte_tokenizer, check_bpe_vocab, train_bpe
from lmforge.tokenizers.contract import check_tokenizer

FORMAT_VERSION = 1
_HUB_NAME = re.compile(r"^[\w.-]+(/[\w.-]+)?$")

Texts = Callable[[], Iterable[str]]


def tokenizer_fingerprint(tokenizer: PreTrainedTokenizerFast) -> str:
    """Hash of the tokenizer's full `tokenizer.json` serialization (vocab, merges, specials)."""
    return hashlib.sha256(tokenizer.backend_tokenizer.to_str().encode()).hexdigest()[:16]


VOCAB_FILES = ("tokenizer.json", "vocab.json", "vocab.txt", "*.model", "*.tiktoken")
JSON_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerFast:
    """`AutoTokenizer.from_pretrained(path)`, any failure one line naming the directory or file: a
    local directory must hold a vocabulary (transformers would build an empty tokenizer) and valid JSON."""
    from transformers import AutoTokenizer

    local = Path(path).expanduser()
    if local.is_dir():
        if not any(next(local.glob(pattern), None) for pattern in VOCAB_FILES):
            raise UserError(f"{local}: no tokenizer files (tokenizer.json, vocab.json, vocab.txt or *.model)")
        for name in JSON_FILES:
            try:
                if (local / name).is_file():
                    json.loads((local / name).read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, ValueError) as e:
                raise UserError(f"{local / name}: not a readable JSON file ({e})") from e
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(local if local.exists() else path), trust_remote_code=False)
    except Exception as e:  # noqa: BLE001 - any loader failure is a bad tokenizer for the user
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise UserError(f"{path}: cannot load a tokenizer: {first}") from e
    return check_tokenizer(tokenizer, str(path))


class TokenizerSpec:
    """How a corpus gets its tokenizer (a Hugging Face fast tokenizer and the directory it is in)."""

    def load_or_train(self, cache_dir: str | Path, texts: Texts, fingerprint: str
                      ) -> tuple[PreTrainedTokenizerFast, Path]:
        """Load the tokenizer, training it first on `texts()` (the corpus's train text) if needed;
        `fingerprint` identifies that text, for the cache."""
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


class BPE(TokenizerSpec):
    """A byte-level BPE of `vocab_size` tokens (specials included) trained on the corpus's train
    text, cached under `cache_dir/tokenizers/` by corpus fingerprint, or saved at `path` if given
    (and reused from there)."""

    def __init__(self, vocab_size: int, path: str | None = None) -> None:
        check_bpe_vocab(int(vocab_size))
        self.vocab_size, self.path = int(vocab_size), path

    def directory(self, cache_dir: str | Path, fingerprint: str) -> Path:
        if self.path:
            return Path(self.path).expanduser()
        key = json.dumps([fingerprint, self.vocab_size, "bpe", FORMAT_VERSION])
        return Path(cache_dir) / "tokenizers" / f"bpe{self.vocab_size}-{hashlib.sha256(key.encode()).hexdigest()[:16]}"

    def load_or_train(self, cache_dir: str | Path, texts: Texts, fingerprint: str
                      ) -> tuple[PreTrainedTokenizerFast, Path]:
        out = self.directory(cache_dir, fingerprint)
        if not (out / "tokenizer.json").exists():
            return train_bpe(texts(), self.vocab_size, out), out
        tok = load_tokenizer(out)
        # The size asked when it was trained (a small corpus gives fewer tokens), else its length.
        size = tok.init_kwargs.get("lmforge_vocab_size")
        if size != self.vocab_size and (size is not None or len(tok) > self.vocab_size):
            raise UserError(f"tokenizer.path={out}: holds a tokenizer of vocab size {size or len(tok)}, "
                            f"not tokenizer.vocab_size={self.vocab_size}; choose another tokenizer.path or "
                            "remove that one")
        return tok, out


class Bytes(TokenizerSpec):
    """Raw UTF-8 bytes: ids 0-255, then end-of-text and padding (258 tokens, no training)."""

    def __init__(self, path: str | None = None) -> None:
        self.path = path

    def load_or_train(self, cache_dir: str | Path, texts: Texts, fingerprint: str
                      ) -> tuple[PreTrainedTokenizerFast, Path]:
        out = Path(self.path).expanduser() if self.path else Path(cache_dir) / "tokenizers" / f"bytes-v{FORMAT_VERSION}"
        if (out / "tokenizer.json").exists():
            return load_tokenizer(out), out
        return byte_tokenizer(out), out


class Pretrained(TokenizerSpec):
    """Any Hugging Face fast tokenizer: a local directory (or a hub name, online). It gets an eos
    token if it has none (it separates documents) and pad = eos if it has no pad token."""

    def __init__(self, path: str) -> None:
        if not path:
            raise UserError("tokenizer.path is required with tokenizer=pretrained")
        if not Path(path).expanduser().exists() and not _HUB_NAME.match(str(path)):
            raise UserError(f"tokenizer.path={path}: no such directory")
        self.path = path

    def load_or_train(self, cache_dir: str | Path, texts: Texts, fingerprint: str
                      ) -> tuple[PreTrainedTokenizerFast, Path]:
        local = Path(self.path).expanduser()
        try:
            tok = load_tokenizer(self.path)
        except UserError as e:
            raise UserError(f"tokenizer.path: {e}") from e
        if not isinstance(tok, PreTrainedTokenizerFast):
            raise UserError(f"tokenizer.path={self.path}: not a fast (Rust) tokenizer")
        if tok.eos_token is None:
            tok.add_special_tokens({"eos_token": EOS})
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        return tok, local
