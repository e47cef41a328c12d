"""Packing at scale and on tiny corpora: tiktoken ids equal the tokenizer's own, an interrupted
build continues, concurrent processes wait for one builder, and a one-file corpus trains."""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import regex

from conftest import STDLIB, csv_metric, ctrl_c_at_its_default, is_stopped, lmforge, metrics, ok
from lmforge.data import plaintext
from lmforge.data.corpus import Corpus, TextFile, resolve_sources, stdlib_files, tail_start
from lmforge.data.packing import exclusive, load_packed, pack_corpus
from lmforge.data.text import TextDataModule
from lmforge.tokenizers import BPE, byte_tokenizer
from lmforge.tokenizers.build import wrap
from lmforge.tokenizers.fast import GPT2_PATTERN, TextEncoder, encodes_pieces_alike, mergeable_ranks


def input_txt(folder: Path, names=("json/decoder.py", "json/encoder.py", "textwrap.py", "shlex.py")) -> Path:
    """One real text file, as users try first: a few stdlib modules concatenated."""
    path = folder / "input.txt"
    path.write_text("".join((STDLIB / name).read_text(encoding="utf-8") for name in names), encoding="utf-8")
    return path


def test_tiktoken_gives_the_tokenizers_ids_on_the_whole_stdlib(tmp_path: Path) -> None:
    corpus = Corpus(stdlib_files())
    bpe, _ = BPE(4096).load_or_train(tmp_path, corpus.train_texts, corpus.fingerprint)
    docs = list(corpus.documents())
    docs.append("literal <|endoftext|> and <|pad|> are text here: héllo 🎉 \x00\r\n")
    for tokenizer, texts in ((bpe, docs), (byte_tokenizer(tmp_path / "bytes"), docs[:100] + docs[-1:])):
        json_text = tokenizer.backend_tokenizer.to_str()
        fast, reference = TextEncoder(json_text), TextEncoder(json_text, fast=False)
        assert fast.name == "tiktoken" and reference.name == "tokenizers"
        assert fast.encode_batch(texts) == reference.encode_batch(texts)


def test_a_tokenizer_that_does_not_convert_keeps_its_own_encoder(tmp_path: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.Whitespace()  # not GPT-2's byte-level regex
    raw.train_from_iterator(["some words to learn merges from"] * 20,
                            trainers.BpeTrainer(vocab_size=80, special_tokens=["<|endoftext|>", "<|pad|>"]))
    tokenizer = wrap(raw)
    assert mergeable_ranks(tokenizer.backend_tokenizer.to_str()) is None
    (tmp_path / "a.txt").write_text("some words to learn\n" * 50)
    out, _ = pack_corpus(Corpus(resolve_sources([str(tmp_path / "a.txt")])), tokenizer, cache_dir=tmp_path / "c")
    train, val, meta = load_packed(out)
    assert meta["encoder"] == "tokenizers" and meta["split"] == "position"
    assert tokenizer.decode(train[:-1].tolist() + val[:-1].tolist()).replace(" ", "") == ("somewordstolearn" * 50)


KILLED_BUILD = """
import sys
from transformers import AutoTokenizer
from lmforge.data import packing
from lmforge.data.corpus import Corpus, stdlib_files
packing.CHECKPOINT_BYTES, packing.BATCH_BYTES = 1 << 18, 1 << 15  # save progress often
from lmforge.errors import Stopped
try:
    packing.pack_corpus(Corpus(stdlib_files()), AutoTokenizer.from_pretrained(sys.argv[1]), cache_dir=sys.argv[2],
                        num_proc=1, fast=False)
except Stopped as e:
    sys.exit(f"{e}")
"""


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGINT])
def test_a_killed_build_continues_where_it_stopped(signum: int, tmp_path: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    tokenizer = byte_tokenizer(tmp_path / "bytes")
    cache = tmp_path / "cache"
    proc = subprocess.Popen([sys.executable, "-c", KILLED_BUILD, str(tmp_path / "bytes"), str(cache)],
                            stderr=subprocess.PIPE, text=True, preexec_fn=ctrl_c_at_its_default)
    deadline = time.time() + 300

    def saved() -> list[Path]:  # a saved point of a build still under way (its files not yet published)
        return [p for p in (cache / "corpus").glob(".*.partial/progress.json") if (p.parent / "train.bin").is_file()]

    progress: list[Path] = []
    while not progress and proc.poll() is None and time.time() < deadline:
        progress = saved()
        if progress:  # frozen there: the signal reaches the build at this point, however busy the machine
            proc.send_signal(signal.SIGSTOP)
            while not is_stopped(proc.pid):
                time.sleep(0.01)
            progress = saved()
            if not progress:
                proc.send_signal(signal.SIGCONT)
        time.sleep(0.02)
    assert progress, f"the build ended before it saved any progress: exit {proc.poll()}"
    proc.send_signal(signum)
    proc.send_signal(signal.SIGCONT)
    _, err = proc.communicate(timeout=120)
    done = json.loads(progress[0].read_text())["parts"]
    assert done > 0
    if signum == signal.SIGINT:  # Ctrl-C: one line that says what is kept for the next launch
        assert err.strip().startswith(f"interrupted while tokenizing the corpus: {progress[0].parent} keeps the "
                                       "first "), err
        assert err.strip().endswith("the same command continues from there"), err
    corpus = Corpus(stdlib_files())
    with caplog.at_level("INFO", logger="lmforge.data.packing"):
        resumed, built = pack_corpus(corpus, tokenizer, cache_dir=cache, num_proc=1)
    assert built and "continuing an interrupted build" in caplog.text
    fresh, _ = pack_corpus(corpus, tokenizer, cache_dir=tmp_path / "fresh", num_proc=1)
    for name in ("train.bin", "val.bin", "meta.json"):
        assert (resumed / name).read_bytes() == (fresh / name).read_bytes()
    assert not list((cache / "corpus").glob(".*.partial"))


def _prepare(corpus_dir: str, cache: str, queue) -> None:
    dm = TextDataModule(paths=[corpus_dir], tokenizer=BPE(300), cache_dir=cache, block_size=16)
    dm.prepare_data()
    queue.put((dm.packed_built, str(dm.packed_dir), str(dm.tokenizer_dir)))


def test_processes_preparing_at_once_wait_for_one_builder(tmp_path: Path) -> None:
    (tmp_path / "corpus").mkdir()
    for name in ("json/decoder.py", "json/encoder.py", "json/scanner.py", "json/__init__.py", "textwrap.py"):
        (tmp_path / "corpus" / name.replace("/", "_")).write_text((STDLIB / name).read_text())
    cache = tmp_path / "cache"
    probe = TextDataModule(paths=[str(tmp_path / "corpus")], tokenizer=BPE(300), cache_dir=str(cache))
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    with exclusive(cache / "locks" / probe.corpus.fingerprint, "holding the lock in the test"):
        ranks = [ctx.Process(target=_prepare, args=(str(tmp_path / "corpus"), str(cache), queue)) for _ in range(2)]
        for rank in ranks:
            rank.start()
        time.sleep(1.5)
        assert queue.empty() and all(rank.is_alive() for rank in ranks)  # both wait for the lock
    results = [queue.get(timeout=120) for _ in ranks]
    for rank in ranks:
        rank.join()
    assert sorted(built for built, _, _ in results) == [False, True]  # one built, the other reused it
    assert len({(packed, tok) for _, packed, tok in results}) == 1
    assert len(list((cache / "tokenizers").iterdir())) == 1


def test_a_one_file_corpus_holds_out_the_tail_of_its_text(tmp_path: Path) -> None:
    path = input_txt(tmp_path)
    text = path.read_text()
    dm = TextDataModule(paths=[str(path)], tokenizer=BPE(400), cache_dir=str(tmp_path / "cache"), val_fraction=0.1,
                        block_size=64)
    dm.setup("fit")
    train, val, meta = load_packed(dm.packed_dir)
    cut = tail_start(text, 0.1)
    assert meta["split"] == "position" and text[cut - 1] == "\n"  # the tail starts at a line
    assert dm.tokenizer.decode(train[:-1].tolist()) == text[:cut]
    assert dm.tokenizer.decode(val[:-1].tolist()) == text[cut:]  # no text in both
    assert 0.09 < len(text[cut:]) / len(text) < 0.12 and meta["val_bytes"] == len(text[cut:].encode())
    assert list(dm.corpus.train_texts()) == [text[:cut]]  # the tokenizer never saw the tail
    assert len(dm.val_dataloader()) >= 1 and next(iter(dm.train_dataloader()))["input_ids"].shape == (16, 64)
    again = TextDataModule(paths=[str(path)], tokenizer=BPE(400), cache_dir=str(tmp_path / "other"), val_fraction=0.1)
    again.setup("fit")
    assert np.array_equal(load_packed(again.packed_dir)[1], val)  # deterministic


def test_a_few_documents_split_each_one_by_position(tmp_path: Path) -> None:
    for i, name in enumerate(("json/decoder.py", "json/encoder.py")):
        (tmp_path / f"{i}.txt").write_text((STDLIB / name).read_text())
    corpus = Corpus(resolve_sources([str(tmp_path)]), val_fraction=0.2)
    assert corpus.split_by == "position"  # 2 documents: the hash would hold out one of the two
    parts = list(corpus.parts())
    assert [(held_out, ends) for _, held_out, ends in parts] == [(False, True), (True, True)] * 2
    assert "".join(text for text, _, _ in parts) == "".join(corpus.documents())
    many = Corpus(stdlib_files()[:50], val_fraction=0.2)
    assert many.split_by == "document"


def packed_in_pieces(path: Path, tokenizer, cache: Path, piece_bytes: int, monkeypatch) -> tuple[bytes, bytes, dict]:
    """train.bin, val.bin and meta of `path` packed while plain text is read in pieces of `piece_bytes`."""
    monkeypatch.setattr(plaintext, "PIECE_BYTES", piece_bytes)
    out, built = pack_corpus(Corpus(resolve_sources([str(path)]), val_fraction=0.1), tokenizer, cache_dir=cache)
    assert built
    meta = json.loads((out / "meta.json").read_text())
    return (out / "train.bin").read_bytes(), (out / "val.bin").read_bytes(), meta


@pytest.mark.parametrize("name", ["input.txt", "input.txt.gz"])
def test_a_text_file_read_in_pieces_packs_to_the_ids_of_its_whole_text(tmp_path: Path, name: str,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    # Whitespace before a newline is where a careless cut changes the pre-tokens: blank lines, CRLF,
    # trailing spaces and tabs, a no-break space; and lines in other scripts.
    tricky = "".join(f"line {i} of it{end}Next" for i, end in enumerate(["\n\n", "\r\n", " \n", "\t\n", "\xa0\n", "\n"]))
    text = (input_txt(tmp_path).read_text() + (tricky + "\n\n\nДа.\n中文。\n") * 60
            + "ünïcode at the end\nno newline")
    path = tmp_path / name
    if name.endswith(".gz"):
        import gzip

        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    monkeypatch.setattr(plaintext, "PIECE_BYTES", 2048)
    pieces = list(TextFile(path).pieces())
    assert len(pieces) > 8 and "".join(pieces) == text  # read in pieces, nothing lost or repeated
    # Cut where GPT-2's pre-tokenizer splits: its pre-tokens of the pieces are those of the whole text.
    assert [t for p in pieces for t in regex.findall(GPT2_PATTERN, p)] == regex.findall(GPT2_PATTERN, text)
    assert TextFile(path).tail_start(0.1) == tail_start(text, 0.1)
    corpus = Corpus(resolve_sources([str(path)]), val_fraction=0.1)
    bpe, _ = BPE(1000).load_or_train(tmp_path / "tok", corpus.train_texts, "t")  # learned from the pieces
    alone, _ = BPE(1000).load_or_train(tmp_path / "tok", lambda: [text[:tail_start(text, 0.1)]], "whole")
    assert bpe.get_vocab() == alone.get_vocab()  # as from the whole head in one text
    assert "ĊĊ" in bpe.get_vocab()  # a merge that a cut after the blank line would break
    for tokenizer in (bpe, byte_tokenizer(tmp_path / "bytes")):
        whole = packed_in_pieces(path, tokenizer, tmp_path / f"whole-{len(tokenizer)}", 1 << 30, monkeypatch)
        cut = packed_in_pieces(path, tokenizer, tmp_path / f"cut-{len(tokenizer)}", 2048, monkeypatch)
        assert cut == whole  # the same ids, eos and counts: one document, its head and its tail
        train, val, meta = cut
        assert meta["train_docs"] == meta["val_docs"] == 1
        ids = np.frombuffer(train, dtype=meta["dtype"]).tolist() + np.frombuffer(val, dtype=meta["dtype"]).tolist()
        assert tokenizer.decode(ids, skip_special_tokens=True) == text


def test_pieces_are_joined_for_a_tokenizer_that_could_merge_across_a_cut(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    text = input_txt(tmp_path).read_text()
    raw = Tokenizer(models.BPE())
    for prefix_space in (False, True):  # a space added before each text: pieces would each get one
        byte_level = Tokenizer(models.BPE())
        byte_level.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=prefix_space)
        assert encodes_pieces_alike(byte_level.to_str()) is not prefix_space
    raw.pre_tokenizer = pre_tokenizers.Metaspace()  # marks the start of each text it encodes
    assert not encodes_pieces_alike(raw.to_str())
    raw.train_from_iterator([text], trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>", "<|pad|>"]))
    tokenizer = wrap(raw)
    monkeypatch.setattr(plaintext, "PIECE_BYTES", 2048)
    assert len(list(TextFile(tmp_path / "input.txt").pieces())) > 8
    train, val, meta = packed_in_pieces(tmp_path / "input.txt", tokenizer, tmp_path / "c", 2048, monkeypatch)
    cut = tail_start(text, 0.1)
    eos = [tokenizer.eos_token_id]
    assert np.frombuffer(train, dtype=meta["dtype"]).tolist() == tokenizer(text[:cut])["input_ids"] + eos
    assert np.frombuffer(val, dtype=meta["dtype"]).tolist() == tokenizer(text[cut:])["input_ids"] + eos


@pytest.mark.slow
def test_a_one_file_corpus_trains_from_the_cli(tmp_path: Path) -> None:
    path = input_txt(tmp_path)
    run = tmp_path / "run"
    ok(lmforge("train", "data=text", f"data.paths=[{path}]", "tokenizer.vocab_size=300", "model.block_size=64",
               "model.n_layer=2", "model.n_embd=64", "data.val_windows=16", "data.batch_size=8", "trainer.max_steps=20", "trainer.val_check_interval=10", "trainer.max_time=null",
               f"paths.cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={run}", "print_config=false", cwd=tmp_path))
    # It learned: validation loss falls, below a uniform guess over the 300 tokens (about ln 300 untrained).
    val_loss = csv_metric(run, "val/loss")
    assert len(val_loss) == 2 and val_loss[-1] < val_loss[0] and val_loss[-1] < math.log(300) - 0.3, val_loss
    assert metrics(run)["test/loss"] < math.log(300) - 0.3
