"""What lmforge needs of a tokenizer (a Hugging Face one fits): its size, encode/decode, saving, and
the three special-token ids (None when it has no such token). Checked where a tokenizer is loaded."""

from __future__ import annotations

from typing import Any, Optional, Protocol, runtime_checkable

from lmforge.errors import UserError

SPECIAL_IDS = ("bos_token_id", "eos_token_id", "pad_token_id")


@runtime_checkable
class Tokenizer(Protocol):
    """A text tokenizer as the data, generation and export use it."""

    bos_token_id: Optional[int]
    eos_token_id: Optional[int]
    pad_token_id: Optional[int]

    def __len__(self) -> int: ...

    def __call__(self, text: Any, **kwargs: Any) -> Any: ...

    def encode(self, text: str, **kwargs: Any) -> list[int]: ...

    def decode(self, ids: Any, **kwargs: Any) -> str: ...

    def save_pretrained(self, save_directory: Any, **kwargs: Any) -> Any: ...


def check_tokenizer(tokenizer: Any, source: str) -> Tokenizer:
    """`tokenizer` itself when it has every declared part; else one line naming `source` and what lacks."""
    if not isinstance(tokenizer, Tokenizer):
        missing = [name for name in ("__len__", "__call__", "encode", "decode", "save_pretrained", *SPECIAL_IDS)
                   if not hasattr(tokenizer, name)]  # which declared parts the object lacks, for the message
        raise UserError(f"{source}: {type(tokenizer).__name__} is not a usable tokenizer (it has no "
                        f"{', '.join(missing)})")
    return tokenizer


def special_ids(tokenizer: Tokenizer) -> dict[str, Optional[int]]:
    """The tokenizer's bos, eos and pad ids by name (None for a token it lacks)."""
    return {name: getattr(tokenizer, name) for name in SPECIAL_IDS}  # declared attributes, by name


def pad_id(tokenizer: Tokenizer) -> Optional[int]:
    """The id batches are padded with: the pad token, else eos (GPT-2 style); None without either."""
    for value in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if value is not None:
            return int(value)
    return None
