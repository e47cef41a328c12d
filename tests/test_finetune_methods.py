"""finetune=full/freeze/lora presets decide which parameters train (in-process, on a tiny GPT-2 classifier)."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from transformers import GPT2Config, GPT2ForSequenceClassification, GPT2Model

from lmforge.config import conf_dir
from lmforge.errors import UserError


def apply_finetune(model, preset: str, **overrides):
    """Instantiate conf/finetune/<preset>.yaml with `overrides` and apply it to `model`."""
    with initialize_config_dir(str(conf_dir() / "finetune"), version_base="1.3"):
        node = compose(preset, overrides=[f"{k}={v}" for k, v in overrides.items()])
    return instantiate(node).apply(model)


def classifier() -> GPT2ForSequenceClassification:
    config = GPT2Config(vocab_size=300, n_positions=32, n_layer=3, n_head=2, n_embd=16, num_labels=2,
                        pad_token_id=0)
    return GPT2ForSequenceClassification(config)


def trainable(model) -> set[str]:
    return {name for name, p in model.named_parameters() if p.requires_grad}


def test_train_only_head_is_a_linear_probe():
    model = apply_finetune(classifier(), "freeze")
    assert trainable(model) == {"score.weight"}


def test_freeze_embeddings_and_first_layers():
    model = apply_finetune(classifier(), "full", freeze_embeddings=True, freeze_layers=2)
    names = trainable(model)
    assert "transformer.wte.weight" not in names and "transformer.wpe.weight" not in names
    assert not any(n.startswith(("transformer.h.0.", "transformer.h.1.")) for n in names)
    assert any(n.startswith("transformer.h.2.") for n in names) and "score.weight" in names


def test_lora_trains_adapters_and_the_head_only():
    model = apply_finetune(classifier(), "lora", r=4, alpha=8, dropout=0.0)
    names = trainable(model)
    assert names and all("lora_" in n or "score" in n for n in names)
    assert any("lora_A" in n for n in names)


def test_freezing_everything_is_a_user_error():
    headless = GPT2Model(classifier().config)
    with pytest.raises(UserError, match="every parameter is frozen"):
        apply_finetune(headless, "freeze")
