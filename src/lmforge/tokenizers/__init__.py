"""Tokenizers: the `tokenizer` config group (train a byte-level BPE, plain bytes, or a pretrained
one), Hugging Face fast tokenizers as the saved format, and tiktoken to encode corpora fast."""

from lmforge.tokenizers.build import EOS, PAD, byte_tokenizer, save_tokenizer, train_bpe
from lmforge.tokenizers.specs import BPE, Bytes, Pretrained, TokenizerSpec, tokenizer_fingerprint

__all__ = ["BPE", "EOS", "PAD", "Bytes", "Pretrained", "TokenizerSpec", "byte_tokenizer", "save_tokenizer",
           "tokenizer_fingerprint", "train_bpe"]
