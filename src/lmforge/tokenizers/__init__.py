"""Tokenizers: train a byte-level BPE, build a byte tokenizer, or load a pretrained one."""

from lmforge.tokenizers.build import EOS, PAD, byte_tokenizer, save_tokenizer, train_bpe
from lmforge.tokenizers.load import load_tokenizer, tokenizer_fingerprint

__all__ = ["EOS", "PAD", "byte_tokenizer", "load_tokenizer", "save_tokenizer", "tokenizer_fingerprint", "train_bpe"]
