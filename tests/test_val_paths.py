"""data.val_paths: validation and test text from files of their own, training from all of data.paths (real
files, real runs): nothing of the validation text reaches training, the cache follows the files, and bad
validation files are refused in one line."""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch the network (set before HF imports)
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import numpy as np
import pytest

from conftest import STDLIB, cli, metrics, ok, one_line_error
from lmforge.config.paths import absolute_paths
from lmforge.data.packing import load_packed
from lmforge.data.text import TextDataModule
from lmforge.errors import UserError
from lmforge.tokenizers import BPE, Bytes

MARK = "HELD-OUT"  # in every line of the validation files, in no training file


def held_out_text(n: int, tag: str = "") -> str:
    return "".join(f"{MARK}{tag} line {i}: a sentence only validation reads, number {i * 7}.\n" for i in range(n))


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    """(a training folder of three stdlib modules, a validation folder of two text files)."""
    train, val = tmp_path / "train", tmp_path / "val"
    train.mkdir()
    val.mkdir()
    for name in ("bisect.py", "heapq.py", "textwrap.py"):
        shutil.copy(STDLIB / name, train / name)
    (val / "b1.txt").write_text(held_out_text(60, "a"))
    (val / "b2.txt").write_text(held_out_text(40, "b"))
    return train, val


def datamodule(train: Path, val_paths: list[str] | None, tmp_path: Path, **kw) -> TextDataModule:
    args = dict(paths=[str(train)], val_paths=val_paths, tokenizer=BPE(300), cache_dir=str(tmp_path / "cache"),
                block_size=32, batch_size=4, val_windows=16)
    dm = TextDataModule(**{**args, **kw})
    dm.prepare_data()
    dm.setup()
    return dm


def contains(ids: np.ndarray, window: np.ndarray) -> bool:
    """Whether `window` is a contiguous run of `ids`."""
    runs = np.lib.stride_tricks.sliding_window_view(ids, len(window))
    return bool((runs == window).all(axis=1).any())


def test_validation_is_the_val_files_and_training_all_of_paths(files, tmp_path):
    train, val = files
    dm = datamodule(train, [str(val / "*.txt")], tmp_path)  # a glob, as data.paths takes
    train_ids, val_ids, meta = load_packed(dm.packed_dir)
    tok, eos = dm.tokenizer, dm.tokenizer.eos_token_id
    # Validation is exactly the two files, whole, in order; each followed by eos.
    b1, b2 = (val / "b1.txt").read_text(), (val / "b2.txt").read_text()
    expected = [*tok.encode(b1, add_special_tokens=False), eos, *tok.encode(b2, add_special_tokens=False), eos]
    assert val_ids.tolist() == expected
    assert (meta["split"], meta["val_docs"], meta["val_bytes"]) == ("files", 2, len((b1 + b2).encode()))
    # Training is every training file, whole (no held-out part), and none of the validation text.
    docs = [tok.decode(d) for d in np.split(train_ids, np.flatnonzero(train_ids == eos) + 1)[:-1]]
    assert [d.removesuffix(tok.eos_token) for d in docs] == [(train / n).read_text()
                                                              for n in ("bisect.py", "heapq.py", "textwrap.py")]
    assert MARK not in tok.decode(train_ids)
    # Every validation (and test) window is a run of the validation files' ids, and no training window is.
    windows = [np.append(w["input_ids"].numpy(), w["labels"][-1].item()) for w in dm.val_dataset()]
    assert len(windows) == min(16, len(val_ids) // 33) == len(dm.test_dataloader().dataset)
    assert all(contains(val_ids, w) for w in windows)
    for sample in dm.train_dataset.__getitems__(list(range(64))):
        window = np.append(sample["input_ids"].numpy(), sample["labels"][-1].item())
        assert contains(train_ids, window) and not contains(val_ids, window)
    # Bits per byte divide by the validation files' own bytes per token.
    assert dm.bytes_per_token("val") == pytest.approx(len((b1 + b2).encode()) / len(expected))


def test_a_mixtures_source_validates_on_its_own_val_paths(files, tmp_path):
    train, val = files
    books = tmp_path / "books.txt"
    books.write_text((STDLIB / "this.py").read_text() * 3)
    sources = {"code": {"paths": [str(train)], "weight": 0.5, "val_paths": [str(val)]},
               "books": {"paths": [str(books)], "weight": 0.5}}
    dm = TextDataModule(paths=None, sources=sources, tokenizer=Bytes(), cache_dir=str(tmp_path / "cache"),
                        block_size=32, batch_size=4, val_windows=8)
    dm.prepare_data()
    dm.setup()
    code_train, code_val, meta = load_packed(dm.mixture.packed_dirs["code"])
    assert meta["split"] == "files" and meta["val_docs"] == 2  # the source's own validation files, whole
    assert MARK in bytes(code_val.astype(np.uint8)[code_val < 256]).decode()
    assert MARK not in bytes(code_train.astype(np.uint8)[code_train < 256]).decode(errors="replace")
    books_meta = load_packed(dm.mixture.packed_dirs["books"])[2]
    assert books_meta["split"] != "files"  # the other source still holds out a part of its own text
    with pytest.raises(UserError, match=r"data.sources.code.val_paths: .* is also in data.sources.code.paths"):
        TextDataModule(paths=None, sources={"code": {**sources["code"], "val_paths": [str(train / "heapq.py")]}},
                       tokenizer=Bytes(), cache_dir=str(tmp_path / "cache"))


def test_the_cache_follows_the_val_files(files, tmp_path):
    train, val = files
    held_out = datamodule(train, None, tmp_path, tokenizer=Bytes())
    first = datamodule(train, [str(val / "b1.txt")], tmp_path, tokenizer=Bytes())
    other = datamodule(train, [str(val / "b2.txt")], tmp_path, tokenizer=Bytes())
    assert len({held_out.packed_dir, first.packed_dir, other.packed_dir}) == 3
    assert load_packed(held_out.packed_dir)[2]["split"] != "files"  # null: held out of paths, as before
    assert datamodule(train, [str(val / "b1.txt")], tmp_path, tokenizer=Bytes()).packed_dir == first.packed_dir
    (val / "b1.txt").write_text(held_out_text(30, "c"))  # the same name, other text: packed again
    again = datamodule(train, [str(val / "b1.txt")], tmp_path, tokenizer=Bytes())
    assert again.packed_dir != first.packed_dir and again.packed_built
    assert bytes(load_packed(again.packed_dir)[1][:-1].tolist()).decode() == held_out_text(30, "c")


def test_a_run_trains_on_paths_validates_on_val_paths_and_reloads(files, tmp_path):
    train, val = files
    proc = ok(cli("train", "data.paths=[train/]", "data.val_paths=[val/b1.txt]", "tokenizer.vocab_size=300",
                  "model.block_size=64", "trainer.max_steps=4", "trainer.max_time=null", "trainer.val_check_interval=2",
                  "trainer.limit_val_batches=2", "data.val_windows=4", "data.batch_size=4", "~callbacks.text_samples",
                  f"paths.cache_dir={tmp_path / 'cache'}", "hydra.run.dir=run", "print_config=false", cwd=tmp_path))
    assert "validation is data.val_paths" in proc.stdout + proc.stderr
    result = metrics(tmp_path / "run")
    (meta_file,) = (tmp_path / "cache" / "corpus").glob("*/meta.json")
    meta = json.loads(meta_file.read_text())
    assert meta["val_bytes"] == (val / "b1.txt").stat().st_size and meta["split"] == "files"
    bytes_per_token = meta["val_bytes"] / meta["val_tokens"]
    assert result["val/bpb"] == pytest.approx(result["val/loss"] / math.log(2) / bytes_per_token, rel=1e-4)
    # The saved run names the validation file absolutely: `eval` from elsewhere scores the same text.
    saved = (tmp_path / "run" / ".hydra" / "config.yaml").read_text()
    assert str(val / "b1.txt") in saved
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    again = ok(cli("eval", f"ckpt_path={tmp_path / 'run'}", f"paths.cache_dir={tmp_path / 'cache'}",
                   "hydra.run.dir=eval", cwd=elsewhere))
    assert metrics(elsewhere / "eval")["test/bpb"] == pytest.approx(result["test/bpb"], rel=1e-5), again.stdout


def test_relative_val_paths_become_absolute_like_paths(tmp_path):
    (tmp_path / "v.txt").write_text("x")
    data = absolute_paths({"paths": ["v.txt"], "val_paths": ["v.txt", "*.txt", "hf:name"]}, tmp_path)
    assert data["val_paths"] == [str(tmp_path / "v.txt"), str(tmp_path / "*.txt"), "hf:name"]


@pytest.mark.parametrize("val, expected", [
    ("[empty.txt]", "data.val_paths: {root}/empty.txt is empty or blank"),
    ("[blank.txt]", "data.val_paths: {root}/blank.txt is empty or blank"),
    ("[nope.txt]", "data.val_paths entry 'nope.txt' matches no file"),
    ("['nope/*.txt']", "data.val_paths entry 'nope/*.txt' matches no file"),
    ("[train/heapq.py]", "data.val_paths: {root}/train/heapq.py is also in data.paths"),
    ("[]", "config key 'data.val_paths': expected at least one file"),
    ("[tiny.txt]", "validation split has 3 tokens, fewer than block_size+1=65; add text to data.val_paths"),
])
def test_bad_val_paths_are_refused_in_one_line(files, tmp_path, val, expected):
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "blank.txt").write_text("  \n\n\t\n")
    (tmp_path / "tiny.txt").write_text("ab")
    proc = cli("train", "data.paths=[train/]", f"data.val_paths={val}", "tokenizer=bytes", "model.block_size=64",
               f"paths.cache_dir={tmp_path / 'cache'}", "print_config=false", cwd=tmp_path)
    assert one_line_error(proc).startswith("error: " + expected.format(root=tmp_path)), proc.stderr


def test_a_val_file_inside_a_training_folder_is_refused_by_its_real_path(files, tmp_path):
    train, _ = files
    (tmp_path / "link.py").symlink_to(train / "bisect.py")
    with pytest.raises(UserError, match=r"data.val_paths: .*link.py is also in data.paths"):
        TextDataModule(paths=[str(train)], val_paths=[str(tmp_path / "link.py")], tokenizer=Bytes())
