"""Every bad input is one line naming the key, file or line, exit status 2, no traceback, and no
change to an existing run. Run in-process (`cli`): no interpreter start-up per case."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from conftest import cli, ok, one_line_error

MLP = ["train", "experiment=mnist_mlp", "data.download=false"]
TEXT = ["train", "tokenizer.vocab_size=300", "print_config=false"]
CLASSIFY = ["train", "experiment=finetune_classify", "data.text_column=review", "data.label_column=sentiment"]
SFT = ["train", "experiment=finetune_sft"]


class Evil:
    """Unpickling this runs a shell command: what a crafted checkpoint would carry."""

    def __reduce__(self):
        return (shutil.rmtree, ("/nonexistent-lmforge-test",))


@pytest.fixture(scope="module")
def bad(tmp_path_factory, mlp_run: Path, tiny_hf_lm: Path) -> Path:
    """A folder of malformed inputs, each named after what is wrong with it."""
    d = tmp_path_factory.mktemp("bad")
    (d / "empty.txt").write_text("")
    (d / "latin1.txt").write_bytes("caf\xe9 au lait\n".encode("latin-1"))
    (d / "bad.jsonl").write_text('{"text": "fine"}\n{"text": broken\n')
    (d / "nofield.jsonl").write_text('{"body": "a document without a text field"}\n')
    (d / "notgzip.txt.gz").write_bytes(b"this is not gzip data at all")
    (d / "ok.txt").write_text("def f():\n    return 1\n" * 200)
    (d / "missing_col.csv").write_text("review,label\nnice film,pos\n")
    (d / "short_row.csv").write_text("review,sentiment\nnice film,pos\njust one field\n")
    (d / "empty_label.csv").write_text("review,sentiment\nnice film,pos\nbad film,\n")
    (d / "one_label.csv").write_text("review,sentiment\n" + "".join(f"nice film {i},pos\n" for i in range(20)))
    (d / "train.csv").write_text("review,sentiment\n" + "".join(f"film {i} good,pos\nfilm {i} bad,neg\n" for i in range(20)))
    (d / "unseen.csv").write_text("review,sentiment\nan odd film,meh\n")
    (d / "table.xlsx").write_bytes(b"PK\x03\x04 not a table lmforge reads")
    (d / "tabs.csv").write_text("review\tsentiment\nnice film\tpos\nbad film\tneg\n")
    (d / "loop").symlink_to(d / "loop")
    (d / "open_quote.csv").write_text('review,sentiment\nnice film,pos\n"bad film,neg\nfine film,pos\n')
    (d / "bad_utf8.csv").write_bytes(b"review,sentiment\nnice \xff film,pos\n")
    (d / "malformed.jsonl").write_text('{"review": "x", "sentiment": "pos"}\n[1, 2]\n')
    (d / "sft_missing.jsonl").write_text('{"prompt": "say hi"}\n')
    (d / "sft_messages.jsonl").write_text('{"messages": [{"role": "user", "content": "hi"}]}\n')
    (d / "sft_empty.jsonl").write_text('{"prompt": "say hi", "response": "   "}\n')
    ckpt = mlp_run / "checkpoints" / "last.ckpt"
    (d / "corrupt.ckpt").write_bytes(ckpt.read_bytes()[:700])
    torch.save({"state_dict": {}, "payload": Evil()}, d / "pickle.ckpt")
    torch.save({"weights": torch.zeros(3)}, d / "foreign.ckpt")
    (d / "empty_run").mkdir()
    (d / "nocfg_model").mkdir()
    (d / "foreign_export").mkdir()
    (d / "foreign_export" / "notes.txt").write_text("mine")
    untrusted = d / "untrusted_run"
    shutil.copytree(mlp_run, untrusted)
    config = yaml.safe_load((untrusted / ".hydra" / "config.yaml").read_text())
    config["model"]["_target_"] = "os.system"
    (untrusted / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    (d / "conf" / "experiment").mkdir(parents=True)
    (d / "conf" / "experiment" / "broken.yaml").write_text("# @package _global_\nmodel:\n  hidden: [16\n")
    (d / "conf" / "experiment" / "typo.yaml").write_text("# @package _global_\ndefaults:\n  - mnist_mlp\nmax_epoch: 3\n")
    with gzip.open(d / "ok.jsonl.gz", "wt") as f:
        f.write('{"text": "x"}\n')
    (d / "garbage_tok").mkdir()
    (d / "garbage_tok" / "tokenizer.json").write_text('{"version": "1.0", "trunc')
    for name in ("lm_badtok", "lm_notok", "lm_truncw", "lm_classifier"):
        shutil.copytree(tiny_hf_lm, d / name)
    (d / "lm_badtok" / "tokenizer.json").write_text('{"version": "1.0", "trunc')
    for f in (d / "lm_notok").glob("tokenizer*"):
        f.unlink()
    weights = d / "lm_truncw" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:3000])
    config = json.loads((d / "lm_classifier" / "config.json").read_text())
    (d / "lm_classifier" / "config.json").write_text(json.dumps({**config, "architectures": ["GPT2ForSequenceClassification"]}))
    from lmforge.tokenizers import train_bpe

    train_bpe(["def f():\n    return 1\n"] * 50, 600, d / "tok600")  # fewer tokens: the text has few merges
    return d


# (arguments, a fragment the one error line must hold); "{bad}" (the folder above), "{run}" (a finished
# MLP run) and "{lm}" (a tiny Hugging Face causal LM) are filled in.
CASES = [
    # config keys and values
    ([*MLP, "model.activaton=tanh"], "unknown config key 'model.activaton' (did you mean 'model.activation'?)"),
    ([*MLP, "model.activation=tahn"], "'model.activation': expected 'relu', 'sigmoid', 'tanh' or 'gelu', got 'tahn'"),
    ([*MLP, "trainer.max_epochs=abc"], "'trainer.max_epochs': expected a valid integer, got 'abc'"),
    ([*MLP, "seed=abc"], "'seed': expected a valid integer, got 'abc'"),
    ([*MLP, "seeed=1"], "did you mean 'seed'"),
    ([*MLP, "model=mlpp"], "unknown model preset 'mlpp' (did you mean 'mlp'?)"),
    (["train", "experiment=mnist_mlpp"], "unknown experiment preset 'mnist_mlpp'"),
    ([*MLP, "debug=fdrr"], "unknown debug preset 'fdrr'"),
    ([*MLP, "data._target_=lmforge.nope.Data"], "'data._target_': cannot import 'lmforge.nope.Data'"),
    ([*MLP, "data.batch_sise=3"], "did you mean 'data.batch_size'?"),
    ([*MLP, "data.batch_size=0"], "'data.batch_size': expected"),
    ([*MLP, "optimizer.lr=-0.1"], "'optimizer': Invalid learning rate: -0.1"),
    ([*MLP, "optimizer.betas=[0.9]"], "optimizer.betas"),
    ([*MLP, "optimizer.weight_decay=-1"], "'optimizer': Invalid weight_decay value: -1"),
    ([*MLP, "scheduler.warmup_steps=-5"], "'scheduler.warmup_steps'"),
    ([*MLP, "scheduler.min_lr_ratio=2"], "'scheduler.min_lr_ratio'"),
    (["train", "experiment=pretrain_modern", "scheduler.decay_fraction=0"], "'scheduler.decay_fraction'"),
    (["train", "experiment=pretrain_modern", "scheduler.decay_shape=exp"], "'scheduler.decay_shape': expected 'linear'"),
    (["train", "experiment=pretrain_modern", "optimizer.momentum=1.5"], "optimizer.momentum"),
    ([*MLP, "model.hidden=[0]"], "model.hidden"),
    ([*MLP, "model.dropout=1.5"], "model.dropout"),
    ([*MLP, "model.input_size=5"], "config key 'model.input_size': 5 does not match the data, which has 64"),
    ([*TEXT, "model=llama_tiny", "model.rope_theta=-1"], "config key 'model.rope_theta': expected greater than 0"),
    ([*MLP, "resume=maybe"], "'resume': expected 'auto'"),
    ([*MLP, "nan_policy=ignore"], "'nan_policy': expected 'stop' or 'skip'"),
    ([*MLP, "compile=maybe"], "'compile': expected a valid boolean"),
    ([*MLP, "monitor_mode=maximum"], "'monitor_mode': expected 'min' or 'max'"),
    ([*MLP, "checkpoint.every_n_steps=0"], "'checkpoint.every_n_steps': expected"),
    ([*MLP, "checkpoint.keep=0"], "'checkpoint.keep': expected"),
    ([*MLP, "max_new_tokens=0"], "'max_new_tokens': expected"),
    ([*MLP, "trainer.precision=17"], "precision"),
    ([*MLP, "trainer.max_epochs=-5"], "config key 'trainer.max_epochs': expected greater than or equal to -1"),
    ([*MLP, "trainer.max_steps=-5"], "config key 'trainer.max_steps': expected greater than or equal to -1"),
    ([*MLP, "trainer.limit_val_batches=1.5"], "config key 'trainer.limit_val_batches': expected less than"),
    ([*MLP, "trainer.max_time=abc"], "config key 'trainer.max_time': expected a duration DD:HH:MM:SS"),
    ([*MLP, "trainer.accumulate_grad_batches=0"], "config key 'trainer.accumulate_grad_batches'"),
    ([*MLP, "trainer.val_check_interval=0"], "config key 'trainer.val_check_interval'"),
    ([*MLP, "trainer.gradient_clip_val=-1"], "config key 'trainer.gradient_clip_val'"),
    ([*MLP, "callbacks=[default,early_stopping]", "callbacks.early_stopping.patience=-1"],
     "config key 'callbacks.early_stopping.patience'"),
    (["eval", "ckpt_path={run}", "trainer.limit_test_batches=-1"], "config key 'trainer.limit_test_batches'"),
    ([*MLP, "trainer=gpu"], "this machine has no CUDA GPU"),
    ([*MLP, "trainer.accelerator=gpu", "trainer.devices=4"], "has no CUDA GPU"),
    ([*MLP, "callbacks.model_checkpoint.mode=maxx"], "mode"),
    ([*MLP, "model.hidden=[1,2"], "cannot parse override"),
    ([*MLP, "+model.colour=red"], "unknown config key 'model.colour'"),
    ([*MLP, "resume=auto"], "resume=auto needs a run directory"),
    ([*MLP, "overwrite='false'", "hydra.run.dir={run}"], "'overwrite': expected a boolean, got the string 'false'"),
    ([*MLP, "data.batch_size='16'"], "'data.batch_size': expected a number, got the string '16'"),
    ([*MLP, "model.hidden=['64']"], "'model.hidden[0]': expected a number"),
    ([*MLP, "trainer.max_epochs=2.5"], "config key 'trainer.max_epochs': expected a valid integer, got 2.5"),
    ([*MLP, "trainer.precision=bf17"], "'trainer.precision': expected one of 64, 32, 16, 'transformer-engine'"),
    ([*MLP, "seed=-1"], "'seed': expected greater than or equal to 0, got -1"),
    ([*MLP, "logger=wandb", "logger.wandb.mode=online"], "logger.wandb.mode=online needs a W&B key"),
    (["train", "--config-dir", "{bad}/conf", "experiment=broken"], "broken.yaml:4"),
    (["train", "--config-dir", "{bad}/conf", "experiment=typo"], "'max_epoch'"),
    (["train", "--cfg", "jb"], "invalid choice: 'jb'"),
    (["trian"], "did you mean 'train'"),
    # paths and checkpoints
    ([*MLP, "ckpt_path=/no/such/run"], "/no/such/run"),
    ([*MLP, "ckpt_path={bad}/corrupt.ckpt"], "corrupt.ckpt: not a readable checkpoint"),
    ([*MLP, "ckpt_path={bad}/pickle.ckpt"], "pickle.ckpt: refused to load"),
    ([*MLP, "ckpt_path={bad}/foreign.ckpt"], "foreign.ckpt: not a Lightning checkpoint"),
    ([*MLP, "ckpt_path={bad}/empty_run"], "empty_run: no checkpoint found"),
    ([*MLP, "hydra.run.dir={run}"], "already holds a run (lmforge train, finished"),
    ([*MLP, "hydra.run.dir={bad}/ok.txt"], "ok.txt: a file is in the way of this directory"),
    ([*MLP, "ckpt_path={run}", "model.hidden=[7]"], "its weights do not fit the model this config builds"),
    (["eval", "ckpt_path={run}", "hydra.run.dir={run}"], "already holds a run (lmforge train, finished"),
    (["tokenizer", "data.paths=[{bad}/ok.txt]", "hydra.run.dir={run}"], "already holds a run"),
    ([*MLP, "paths.log_dir=/proc/lmforge"], "/proc/lmforge"),
    ([*CLASSIFY, "init_from=/no/such/model"], "init_from=/no/such/model"),
    ([*MLP, "init_from={lm}"], "does not start from a model directory"),
    ([*TEXT, "data.paths=[{bad}/ok.txt]", "init_from={lm}"], "does not start from a model directory"),
    ([*MLP, "hydra.run.dir="], "hydra.run.dir is empty"),
    ([*CLASSIFY, "init_from={bad}/nocfg_model"], "no config.json"),
    # data files
    ([*TEXT, "data.paths=[/no/such/dir/*.txt]"], "/no/such/dir/*.txt"),
    ([*TEXT, "data.paths=[{bad}/empty.txt]"], "no non-empty document"),
    ([*TEXT, "data.paths=[{bad}/latin1.txt]"], "latin1.txt: not UTF-8"),
    ([*TEXT, "data.paths=[{bad}/bad.jsonl]"], "bad.jsonl:2"),
    ([*TEXT, "data.paths=[{bad}/nofield.jsonl]"], "nofield.jsonl:1"),
    ([*TEXT, "data.paths=[{bad}/notgzip.txt.gz]"], "notgzip.txt.gz: not a valid gzip file"),
    ([*TEXT, "data.paths=[{bad}/ok.txt]", "data.block_size=512"], "data.block_size=512"),
    ([*TEXT, "data.paths=[{bad}/ok.txt]", "model.vocab_size=100"], "model.vocab_size"),
    ([*TEXT, "data.paths=[{bad}/ok.txt]", "model.n_head=3"], "model.n_head"),
    ([*TEXT, "data.paths=[{bad}/ok.txt]", "tokenizer.vocab_size=10"], "tokenizer.vocab_size"),
    ([*TEXT, "tokenizer=pretrained", "tokenizer.path=/no/such/tok"], "tokenizer.path"),
    ([*TEXT, "data.paths=[{bad}/ok.txt]", "data.val_fraction=1.5"], "data.val_fraction"),
    ([*TEXT, "data.paths=[{bad}/ok.txt]", "tokenizer.path={bad}/garbage_tok"], "garbage_tok/tokenizer.json: not a readable JSON"),
    (["train", "print_config=false", "data.paths=[{bad}/ok.txt]", "tokenizer=pretrained", "tokenizer.path={bad}/lm_notok"], "lm_notok: no tokenizer files"),
    ([*TEXT, "data.paths=[{bad}/ok.txt]", "tokenizer.path={bad}/tok600"], "vocab size 600, not tokenizer.vocab_size=300"),
    ([*TEXT, "data.num_workers=-1"], "'data.num_workers': expected greater than or equal to 0"),
    ([*TEXT, "data.max_docs=-1"], "'data.max_docs': expected greater than or equal to 1"),
    ([*TEXT, "data.max_docs=0"], "'data.max_docs': expected greater than or equal to 1"),  # not "no limit"
    ([*CLASSIFY, "data.num_workers=-1"], "'data.num_workers'"),
    ([*SFT, "data.num_workers=-1"], "'data.num_workers'"),
    ([*CLASSIFY, "data.train_file={bad}/missing_col.csv"], "missing_col.csv: no column 'sentiment'"),
    ([*CLASSIFY, "data.train_file={bad}/short_row.csv"], "short_row.csv:3"),
    ([*CLASSIFY, "data.train_file={bad}/empty_label.csv"], "empty_label.csv:3"),
    ([*CLASSIFY, "data.train_file={bad}/one_label.csv"], "only one label"),
    ([*CLASSIFY, "data.train_file={bad}/train.csv", "data.val_file={bad}/unseen.csv"], "unseen.csv:2: label 'meh'"),
    ([*CLASSIFY, "data.train_file={bad}/table.xlsx"], "table.xlsx: unsupported table format"),
    ([*CLASSIFY, "data.train_file={bad}/bad_utf8.csv"], "bad_utf8.csv:2"),
    ([*CLASSIFY, "data.train_file={bad}/open_quote.csv"], "open_quote.csv:3: a quoted field starts here and is never closed"),
    ([*CLASSIFY, "data.train_file={bad}/malformed.jsonl", "data.text_column=review"], "malformed.jsonl:2"),
    ([*CLASSIFY, "data.train_file={bad}/nope.csv"], "nope.csv"),
    ([*CLASSIFY, "data.val_file={bad}/train.csv"], "data.train_file is not"),
    ([*SFT, "init_from={lm}", "data.max_length=32", "data.train_file={bad}/sft_missing.jsonl"], "sft_missing.jsonl:1: missing 'response'"),
    ([*SFT, "init_from={lm}", "data.max_length=32", "data.train_file={bad}/sft_messages.jsonl"], "sft_messages.jsonl:1"),
    ([*SFT, "init_from={lm}", "data.max_length=32", "data.train_file={bad}/sft_empty.jsonl"], "sft_empty.jsonl:1: empty response"),
    ([*SFT, "init_from={lm}", "data.max_length=32", "data.template=no prompt here"], "must contain {prompt}"),
    ([*SFT, "init_from={bad}/lm_badtok", "data.max_length=32"], "lm_badtok/tokenizer.json: not a readable JSON file"),
    ([*SFT, "init_from={bad}/lm_notok", "data.max_length=32"], "lm_notok: no tokenizer files"),
    ([*SFT, "init_from={bad}/lm_truncw", "data.max_length=32"], "lm_truncw/model.safetensors: not a readable safetensors"),
    # the other commands
    (["eval"], "missing required value 'ckpt_path'"),
    (["eval", "ckpt_path={run}", "data.test_file={bad}/nope.csv"], "unknown config key 'data.test_file'"),
    (["eval", "ckpt_path={run}", "data.bogus=1"], "unknown config key 'data.bogus'"),
    (["eval", "ckpt_path={bad}/untrusted_run"], "'model._target_' = 'os.system' is not a trusted target"),
    (["eval", "ckpt_path={bad}/pickle.ckpt"], "refused to load"),
    (["generate", "ckpt_path={run}", "max_new_tokens=-1"], "'max_new_tokens': expected"),
    (["generate", "ckpt_path={run}", "temperature=-1"], "'temperature': expected"),
    (["generate", "ckpt_path={run}", "top_p=2"], "'top_p': expected"),
    (["generate", "ckpt_path={run}", "top_k=0"], "'top_k': expected"),
    (["generate", "ckpt_path={run}", "data.paths=[x]"], "unknown config key 'data.paths'"),
    (["generate", "ckpt_path={run}"], "not a language model run (module ClassifierModule, model MLP)"),
    (["export", "ckpt_path={run}", "export_dir={bad}/out"], "not a language model run (module ClassifierModule"),
    (["generate", "ckpt_path={bad}/lm_classifier"], "lm_classifier is a sequence classifier; generate needs a causal LM"),
    (["generate", "ckpt_path={bad}/lm_badtok"], "lm_badtok/tokenizer.json: not a readable JSON file"),
    (["export", "ckpt_path={bad}/lm_truncw", "export_dir={bad}/out"], "lm_truncw/model.safetensors: not a readable"),
    (["export", "ckpt_path={run}", "export_dir={bad}/foreign_export"], "is not a previous lmforge export"),
    (["export", "ckpt_path={bad}/corrupt.ckpt", "export_dir={bad}/out"], "corrupt.ckpt"),
    (["export", "ckpt_path={run}"], "missing required value 'export_dir'"),
    (["report", "runs=[{bad}/no_such_sweep]"], "no_such_sweep"),
    (["report", "runs=[{run}]", "sort_by=val/nope"], "val/nope"),
    (["tokenizer", "data.paths=[{bad}/empty.txt]"], "no non-empty document"),
    (["tokenizer", "data.paths=[{bad}/ok.txt]", "tokenizer.path={bad}/garbage_tok"], "garbage_tok/tokenizer.json: not a readable JSON"),
    (["tokenizer", "data.paths=[{bad}/ok.txt]", "tokenizer.path={bad}/tok600"], "vocab size 600, not tokenizer.vocab_size="),
    (["train", "experiment=pretrain_modern", "trainer=fsdp"], "leaves each rank a shard of it: use trainer=ddp"),
    (["train", "experiment=mnist_mlp", "trainer=ddp_cpu", "nan_policy=skip"], "nan_policy=skip works in one process"),
    ([*MLP, "-m", "launcher=joblib", "hydra.launcher.n_jobs=0", "model.activation=relu,tanh"],
     "config key 'hydra.launcher.n_jobs': expected a number of parallel jobs >= 1"),
    # numbers and names the code cannot take, found before anything is built
    ([*MLP, "data.batch_size=99999999999999999999"], "config key 'data.batch_size': 99999999999999999999 is too large"),
    ([*MLP, "optimizer.lr=inf"], "config key 'optimizer.lr': expected a finite number, got inf"),
    ([*MLP, "optimizer.lr=nan"], "config key 'optimizer.lr': expected a finite number, got nan"),
    ([*MLP, "model.dropout=-inf"], "config key 'model.dropout': expected a finite number, got -inf"),
    ([*MLP, "trainer.accelerator=tpu"], "trainer.accelerator=tpu, but this machine has no TPU"),
    ([*MLP, "trainer.accelerator=tpuu"], "trainer.accelerator=tpuu: expected one of auto, cpu, gpu"),
    ([*MLP, "trainer.devices=abc"], "config key 'trainer.devices': expected a count >= 1, -1 (every device), 'auto'"),
    ([*MLP, "trainer.num_nodes=0"], "config key 'trainer.num_nodes': expected greater than or equal to 1, got 0"),
    ([*MLP, "ckpt_path="], "config key 'ckpt_path': expected a non-empty path, got ''"),  # not "start afresh"
    (["export", "ckpt_path={run}", "export_dir="], "config key 'export_dir': expected a non-empty path"),
    ([*MLP, "model.hidden=[10000000000000]"], "the config section of lmforge.models.mlp.MLP: not enough memory to build it"),
    ([*MLP, "hydra.run.dir={bad}/" + "x" * 300], "x: file name too long for the file system"),
    ([*TEXT, "data.batch_size=100000000000"], "data.batch_size=100000000000: a batch of 257-token windows holds at most"),
    ([*TEXT, "data.paths=[]"], "config key 'data.paths': expected at least one file, directory, glob or hf: dataset"),
    (["tokenizer", "data.paths=[]"], "config key 'data.paths': expected at least one file"),
    ([*TEXT, "data.paths=[{bad}/loop]"], "data.paths entry '{bad}/loop' is a symlink loop"),
    ([*CLASSIFY, "data.train_file={bad}/tabs.csv"], "the file looks tab-separated: name it .tsv"),
    ([*CLASSIFY, "init_from={run}"], "not a language model or classifier run (module ClassifierModule, model MLP); "
     "init_from takes one of those"),
    ([*MLP, "monitor=val/accc"], "monitor=val/accc: the module logs no such metric (did you mean 'val/acc'?)"),
    ([*MLP, "callbacks=[default,early_stopping]", "callbacks.early_stopping.monitor=val/los"],
     "callbacks.early_stopping.monitor=val/los: the module logs no such metric (did you mean 'val/loss'?)"),
    ([*MLP, "hparams_search=optuna_mlp", "-m", "hydra.sweeper.params.optimizer.lr=interval(1,0)"],
     "give the search space of optimizer.lr as the sweep itself, optimizer.lr=interval(1,0)"),
]


@pytest.mark.parametrize("args, expected", CASES, ids=[f"{i:02d}-{' '.join(a[1:])[:50]}" for i, (a, _) in enumerate(CASES)])
def test_bad_input_is_one_line_naming_it(args, expected, bad: Path, mlp_run: Path, tiny_hf_lm: Path, tmp_path: Path):
    def fill(text: str) -> str:
        return text.replace("{bad}", str(bad)).replace("{run}", str(mlp_run)).replace("{lm}", str(tiny_hf_lm))

    before = {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in mlp_run.rglob("*") if p.is_file()}
    line = one_line_error(cli(*map(fill, args), cwd=tmp_path))
    assert fill(expected) in line
    assert {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in mlp_run.rglob("*") if p.is_file()} == before
    assert not list(tmp_path.rglob("metrics.json"))  # nothing was trained or evaluated
    for left in tmp_path.glob("logs/*/runs/*"):  # no empty run directory; one that began says why it ended
        info = json.loads((left / "run.json").read_text())
        assert info["status"] == "failed" and fill(expected) in info["error"], info


@pytest.mark.parametrize("args, expected", [
    ([*MLP, "model.hidden=[0]"], "model.hidden"),
    ([*MLP, "trainer.accelerator=tpu"], "trainer.accelerator=tpu"),  # was found after the config tree
    ([*MLP, "optimizer.lr=inf"], "optimizer.lr"),
    ([*TEXT, "print_config=true", "data.paths=[{bad}/ok.txt]"], "validation split has"),  # was found in fit
])
def test_a_refused_launch_leaves_no_directory_and_prints_no_config(args, expected, bad: Path, tmp_path: Path):
    args = [a.replace("{bad}", str(bad)) for a in args]
    line = one_line_error(proc := cli(*args, "hydra.run.dir=new/run", cwd=tmp_path))
    assert expected in line
    assert not (tmp_path / "new").exists() and "_target_" not in proc.stdout
    (tmp_path / "mine").mkdir()  # a directory that was there before the launch stays
    one_line_error(cli(*args, "hydra.run.dir=mine", cwd=tmp_path))
    assert (tmp_path / "mine").is_dir()


def test_generate_stops_at_the_model_context(tiny_hf_lm: Path, tmp_path: Path):
    proc = ok(cli("generate", f"ckpt_path={tiny_hf_lm}", "prompt=a", "max_new_tokens=100000000", "temperature=0",
                  cwd=tmp_path))
    assert "max_new_tokens=100000000 is more than the model's context: generating at most 64 tokens" in proc.stderr
    assert len(proc.stdout.strip()) <= 1 + 64  # the prompt, then at most 64 byte tokens


def test_an_hf_dataset_without_network_fails_at_once(monkeypatch):
    """Not offline by the environment, and the Hub's host does not resolve (.invalid never does): one line
    at once, where `datasets` would retry for ~30 s."""
    from huggingface_hub import constants

    from lmforge.data.corpus import HFSource, iter_documents
    from lmforge.errors import UserError

    for name in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "https://lmforge-no-such-host.invalid")
    with pytest.raises(UserError, match=r"hf:lmforge/no_such_dataset: cannot load dataset: the Hugging Face Hub "
                                        r"cannot be reached \(no network\)"):
        next(iter_documents([HFSource("lmforge/no_such_dataset")]))


@pytest.mark.parametrize("damage", ["every checkpoint truncated", "another model shape"])
def test_resume_auto_that_cannot_continue_leaves_the_run_as_it_was(damage: str, mlp_run: Path, tmp_path: Path):
    run = tmp_path / "run"
    shutil.copytree(mlp_run, run)
    extra = []
    if damage == "every checkpoint truncated":
        for ckpt in (run / "checkpoints").glob("*.ckpt"):
            ckpt.write_bytes(ckpt.read_bytes()[:1000])
    else:
        extra = ["model.hidden=[7]"]
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    line = one_line_error(cli(*MLP, f"hydra.run.dir={run}", "resume=auto", *extra, cwd=tmp_path))
    assert ("none of the" in line and "can be read" in line) or "do not fit the model" in line, line
    kept = lambda p: p.name not in (".lock", "train.log")  # noqa: E731 - the job log says what was tried
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and kept(p)} == \
        {p: b for p, b in before.items() if kept(p)}


def test_an_export_is_replaced_only_while_it_holds_nothing_else(tiny_hf_lm: Path, tmp_path: Path):
    out = tmp_path / "out"
    for _ in range(2):  # a re-export replaces the previous one
        assert cli("export", f"ckpt_path={tiny_hf_lm}", f"export_dir={out}", cwd=tmp_path).returncode == 0
    assert (out / "model.safetensors").stat().st_mode & 0o777 == 0o644
    (out / "notes.md").write_text("mine")
    line = one_line_error(cli("export", f"ckpt_path={tiny_hf_lm}", f"export_dir={out}", cwd=tmp_path))
    assert "now also holds notes.md" in line and (out / "notes.md").read_text() == "mine"


def test_the_table_is_at_least_sixty_cases():
    assert len(CASES) >= 60


def test_a_missing_optional_dependency_is_one_line_naming_the_extra_to_install():
    from lmforge.errors import UserError
    from lmforge.extras import require

    with pytest.raises(UserError, match=r"^lmforge prepare needs no_such_lib: pip install 'lmforge\[web\]'$"):
        require("no_such_lib.sub", "web", "lmforge prepare")
    assert require("json", "web", "reading JSON").dumps([1]) == "[1]"  # an installed one is just imported
