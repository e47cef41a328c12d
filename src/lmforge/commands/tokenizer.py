"""`lmforge tokenizer`: train (or reuse) the tokenizer of a corpus and save it (see lmforge.tokenizers)."""

from omegaconf import DictConfig


def main(cfg: DictConfig):
    from lmforge.tokenizers.command import train_tokenizer

    train_tokenizer(cfg)
