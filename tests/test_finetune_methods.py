"""finetune=freeze/lora decide which parameters train (in-process, on a tiny GPT-2 classifier)."""

from __future__ import annotations

import pytest
from transformers import GPT2Config, GPT2ForSequenceClassification, GPT2Model

from lmforge.errors import UserError
from lmforge.finetune.methods import apply_finetune


def classifier() -> GPT2ForSequenceClassification:
    config = GPT2Config(vocab_size=300, n_positions=32, n_layer=3, n_head=2, n_embd=16, num_labels=2,
                        pad_token_id=0)
    return GPT2ForSequenceClassification(config)


def trainable(model) -> set[str]:
    return {name for name, p in model.named_parameters() if p.requires_grad}


def test_train_only_head_is_a_linear_probe():
    model = apply_finetune(classifier(), {"method": "freeze", "train_only_head": True})
    assert trainable(model) == {"score.weight"}


def test_freeze_embeddings_and_first_layers():
    model = apply_finetune(classifier(), {"method": "full", "freeze_embeddings": True, "freeze_layers": 2})
    names = trainable(model)
    assert "transformer.wte.weight" not in names and "transformer.wpe.weight" not in names
    assert not any(n.startswith(("transformer.h.0.", "transformer.h.1.")) for n in names)
    assert any(n.startswith("transformer.h.2.") for n in names) and "score.weight" in names


def test_lora_trains_adapters_and_the_head_only():
    model = apply_finetune(classifier(), {"method": "lora", "r": 4, "alpha": 8, "dropout": 0.0})
    names = trainable(model)
    assert names and all("lora_" in n or "score" in n for n in names)
    assert any("lora_A" in n for n in names)


def test_freezing_everything_is_a_user_error():
    headless = GPT2Model(classifier().config)
    with pytest.raises(UserError, match="every parameter is frozen"):
        apply_finetune(headless, {"method": "freeze", "train_only_head": True})
