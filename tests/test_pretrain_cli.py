"""Pretraining through the CLI on a real corpus (stdlib sources the test copies): train, generate,
export, tokenizer, cache reuse, and each bad input of the text path."""

from __future__ import annotations

import gzip
import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from conftest import cli, csv_metric, lmforge, metrics, ok, one_line_error


def test_pretraining_lowers_validation_loss_and_ends_with_a_sample(pretrain_run):
    run, stdout = pretrain_run
    val_loss = csv_metric(run, "val/loss")
    assert len(val_loss) >= 4
    assert val_loss[-1] < val_loss[0] - 0.5, val_loss
    result = metrics(run)
    for name in ("val/loss", "val/ppl", "val/bpb", "test/loss", "train/loss"):
        assert name in result
    assert result["val/ppl"] == pytest.approx(torch.tensor(result["val/loss"]).exp().item(), rel=1e-3)
    # Rates over windows of training only (no start-up, no validation): the fastest beats the run's average
    # over its wall time (80 steps of 8 x 128 tokens). test_causal_lm checks each against its own clock.
    info = json.loads((run / "run.json").read_text())
    average = 80 * 8 * 128 / (info["end_time"] - info["start_time"])
    rates = csv_metric(run, "train/tokens_per_sec")
    assert len(rates) >= 3 and max(rates) > average, (rates, average)
    assert "def fibonacci(n):" in stdout  # the sample printed at the end
    assert "Epoch 0" in stdout and "/-2" not in stdout  # no epoch limit: not Lightning's "Epoch 0/-2"
    # The last line names the run's directory (where the shared fixture built it; `run` is this worker's copy).
    printed = Path(stdout.strip().splitlines()[-1].removeprefix("run directory: "))
    assert json.loads((printed / "run.json").read_text()) == info
    assert (run / "tokenizer" / "tokenizer.json").is_file()


def test_generate_from_the_run_streams_a_continuation(pretrain_run, tmp_path: Path):
    run, _ = pretrain_run
    args = ["generate", f"ckpt_path={run}", "prompt=import json", "max_new_tokens=30", "temperature=0"]
    first = ok(cli(*args, cwd=tmp_path)).stdout
    assert first.startswith("import json") and len(first.strip()) > len("import json")
    assert ok(cli(*args, cwd=tmp_path)).stdout == first  # greedy: deterministic


def test_export_reloads_with_transformers_with_equal_logits(pretrain_run, tmp_path: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lmforge.experiment.load import load_model

    run, _ = pretrain_run
    out = tmp_path / "my-lm"
    ok(cli("export", f"ckpt_path={run}", f"export_dir={out}", cwd=tmp_path))
    reloaded = AutoModelForCausalLM.from_pretrained(str(out)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(out))
    model, _, _ = load_model(run)
    ids = torch.tensor([tokenizer("def main():\n    return 0")["input_ids"]])
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, reloaded(ids).logits, atol=1e-5)
    # An exported directory is a valid source for generate too.
    args = ["prompt=import json", "max_new_tokens=20", "temperature=0"]
    from_export = ok(cli("generate", f"ckpt_path={out}", *args, cwd=tmp_path)).stdout
    assert from_export == ok(cli("generate", f"ckpt_path={run}", *args, cwd=tmp_path)).stdout


def test_eval_of_a_pretraining_run_reproduces_its_test_loss(pretrain_run, tmp_path: Path):
    run, _ = pretrain_run
    out = tmp_path / "eval"
    ok(cli("eval", f"ckpt_path={run}", f"hydra.run.dir={out}", cwd=tmp_path))
    assert metrics(out)["test/loss"] == pytest.approx(metrics(run)["test/loss"], rel=1e-5)


def test_second_run_reuses_tokenizer_and_packed_corpus(corpus: Path, tmp_path: Path):
    cache = tmp_path / "cache"
    common = ["train", f"data.paths=[{corpus}]", "tokenizer.vocab_size=300", "debug=fdr",
              f"paths.cache_dir={cache}"]
    ok(cli(*common, cwd=tmp_path))
    built = {p: p.stat().st_mtime_ns for p in cache.rglob("*") if p.is_file()}
    assert any(p.name == "train.bin" for p in built) and any(p.name == "tokenizer.json" for p in built)
    ok(cli(*common, cwd=tmp_path))
    after = {p: p.stat().st_mtime_ns for p in cache.rglob("*") if p.is_file()}
    assert after == built  # nothing re-tokenized or re-trained


def test_tokenizer_command_saves_a_loadable_tokenizer(corpus: Path, tmp_path: Path):
    from transformers import AutoTokenizer

    target = tmp_path / "tok"
    proc = ok(cli("tokenizer", f"data.paths=[{corpus}]", "tokenizer.vocab_size=400",
                      f"tokenizer.path={target}", f"paths.cache_dir={tmp_path / 'cache'}", cwd=tmp_path))
    assert "400 tokens" in proc.stdout
    tok = AutoTokenizer.from_pretrained(str(target))
    text = "class Message:\n    \"\"\"An email message ✉\"\"\""
    assert tok.decode(tok(text)["input_ids"]) == text
    # ... and a run can use it as its tokenizer.
    run = tmp_path / "run"
    ok(cli("train", f"data.paths=[{corpus}]", "tokenizer=pretrained", f"tokenizer.path={target}", "debug=fdr",
               f"paths.cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={run}", cwd=tmp_path))
    assert "vocab_size: 400" in (run / ".hydra" / "config.yaml").read_text()


def test_default_experiment_runs_on_the_embedded_stdlib_corpus(tmp_path: Path):
    run = tmp_path / "run"
    ok(lmforge("train", "data.max_docs=150", "trainer.max_steps=6", "trainer.val_check_interval=3",
               "data.val_windows=8", f"paths.cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={run}",
               cwd=tmp_path))
    config = (run / ".hydra" / "config.yaml").read_text()
    assert "paths: null" in config and "gpt2" in config
    # Six steps already beat a uniform guess over the 4,096 tokens (an untrained model scores about ln 4096).
    assert "vocab_size: 4096" in config
    val_loss = csv_metric(run, "val/loss")
    assert val_loss[-1] < val_loss[0] and metrics(run)["val/loss"] < math.log(4096) - 0.1, val_loss


@pytest.mark.slow
def test_fast_dev_run_of_the_gpt2_124m_recipe(tmp_path: Path, corpus: Path):
    ok(lmforge("train", "experiment=pretrain_gpt2_124m", "debug=fdr", f"data.paths=[{corpus}]", "compile=false",
               "model.n_layer=2",  # the preset's width, context and vocabulary, 2 of its 12 layers
               "data.batch_size=2", "data.num_workers=0", "tokenizer.vocab_size=1024",
               f"paths.cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path))
    assert "test/loss" in metrics(tmp_path / "run")


def bad_corpus(tmp_path: Path, name: str, content: bytes) -> Path:
    folder = tmp_path / "bad"
    folder.mkdir(exist_ok=True)
    path = folder / name
    path.write_bytes(gzip.compress(content) if name.endswith(".gz") else content)
    return path


# The DataModule's own checks (empty corpus, .jsonl rows, ...) are tested in-process in
# test_text_data.py; these go through the whole CLI.
@pytest.mark.parametrize("name, content, extra, expected", [
    ("latin1.txt", "caf\u00e9 ok\n".encode("latin-1"), [], "byte offset 3"),
    ("rows.jsonl.gz", b'{"text": "fine"}\nnot json\n', [], "rows.jsonl.gz:2"),
    ("ok.txt", b"hello world " * 500, ["data.block_size=512"], "data.block_size=512"),
    ("ok.txt", b"hello world " * 500, ["model.vocab_size=100"], "model.vocab_size"),
])
def test_bad_text_input_is_one_line(tmp_path: Path, name, content, extra, expected):
    path = bad_corpus(tmp_path, name, content)
    line = one_line_error(cli("train", f"data.paths=[{path}]", "tokenizer=bytes", *extra,
                                  f"paths.cache_dir={tmp_path / 'cache'}", cwd=tmp_path))
    assert expected in line
    if "offset" in expected or ":2" in expected:
        assert str(path) in line


def test_undecodable_files_can_be_skipped_and_counted(tmp_path: Path, corpus: Path):
    bad_corpus(tmp_path, "latin1.txt", "caf\u00e9\n".encode("latin-1"))
    for name in ("decoder.py", "encoder.py", "scanner.py", "tool.py"):
        shutil.copy(corpus / "json" / name, tmp_path / "bad" / name)
    proc = ok(lmforge("train", f"data.paths=[{tmp_path / 'bad'}]", "tokenizer=bytes", "data.on_decode_error=skip",
                      "debug=fdr", "data.block_size=64", f"paths.cache_dir={tmp_path / 'cache'}", cwd=tmp_path))
    assert "skipped 1" in (proc.stdout + proc.stderr).lower()


def test_mixed_precision_clips_the_gradients_of_the_fused_adamw(corpus: Path, tmp_path: Path):
    """pretrain_tiny's AdamW is fused and clips at 1.0 (trainer=gpu is bf16-mixed): Lightning's mixed
    precision refuses to clip a fused optimizer's gradients; bf16 has no loss scaler, so lmforge clips
    them itself and keeps the fused step, instead of a traceback at step 1."""
    proc = ok(cli("train", f"data.paths=[{corpus}]", "tokenizer=bytes", "print_config=false", "trainer.precision=bf16",
                  "trainer.max_steps=4", "trainer.max_time=null", "trainer.val_check_interval=2", "data.batch_size=4",
                  "model.block_size=32", "test=false", cwd=tmp_path))
    assert "optimizer.fused=false" not in proc.stdout + proc.stderr
    assert metrics(next((tmp_path / "logs").rglob("metrics.json")).parent)["train/loss"] > 0
