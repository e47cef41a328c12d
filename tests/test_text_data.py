"""Pretraining data path: tokenizers, corpus reading, packing, and TextDataModule (real files, no mocks)."""

from __future__ import annotations

import gzip
import json
import os
import threading
import warnings
from pathlib import Path
from types import SimpleNamespace

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch the network (set before HF imports)
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

from lmforge.data import packing
from lmforge.data.corpus import Corpus, corpus_fingerprint, iter_documents, resolve_sources, stdlib_files
from lmforge.data.packing import load_packed, pack_corpus
from lmforge.data.splits import in_holdout
from lmforge.data.text import TextDataModule
from lmforge.errors import UserError
from lmforge.tokenizers import BPE, Bytes, Pretrained, byte_tokenizer, save_tokenizer, train_bpe
from lmforge.tokenizers.fast import TextEncoder

TRICKY = "héllo wörld 🎉 ĀĂ 中文字 e\u0301 \x00\t\r\n  spaces  <|endoftext|> don't  .,; \U0010ffff"


def english(n: int) -> list[str]:
    words = "the quick brown fox jumps over lazy dogs while seven wizards quietly judge boxing".split()
    return [" ".join(words[(i * 7 + j) % len(words)] for j in range(40 + i % 13)) + f" doc{i}.\n" for i in range(n)]


def write_corpus(root: Path, n: int = 12) -> Path:
    """A small mixed corpus: plain .txt files, a .jsonl and a gzipped .jsonl; returns its directory."""
    d = root / "corpus"
    d.mkdir()
    docs = english(n)
    for i, doc in enumerate(docs[: n // 2]):
        (d / f"a{i:02d}.txt").write_text(doc + TRICKY if i == 1 else doc, encoding="utf-8")
    rows = [json.dumps({"text": t, "id": i}) for i, t in enumerate(docs[n // 2 :])]
    (d / "b.jsonl").write_text("\n".join(rows[:3]) + "\n\n", encoding="utf-8")
    with gzip.open(d / "c.jsonl.gz", "wt", encoding="utf-8") as f:
        f.write("\n".join(rows[3:]) + "\n")
    return d


# ---- tokenizers
def test_bpe_train_save_reload_same_ids(tmp_path: Path) -> None:
    tok = train_bpe(english(30), 400, tmp_path / "tok")
    again = AutoTokenizer.from_pretrained(str(tmp_path / "tok"))
    for text in [TRICKY, english(1)[0]]:
        ids = tok.encode(text, add_special_tokens=False)
        assert again.encode(text, add_special_tokens=False) == ids
        assert again.decode(ids) == text
    assert len(again) == len(tok) <= 400 and len(tok) > 258  # merges were learned
    assert again.eos_token == again.bos_token == "<|endoftext|>" and again.pad_token == "<|pad|>"
    assert again.eos_token_id != again.pad_token_id


def test_byte_tokenizer_round_trips_any_unicode(tmp_path: Path) -> None:
    tok = byte_tokenizer(tmp_path / "bytes")
    again = AutoTokenizer.from_pretrained(str(tmp_path / "bytes"))
    text = TRICKY + "".join(chr(c) for c in range(0x20, 0x3000, 37))
    ids = again.encode(text, add_special_tokens=False)
    assert ids == tok.encode(text, add_special_tokens=False)
    assert again.decode(ids) == text
    assert bytes(i for i in again.encode("aé€", add_special_tokens=False)) == "aé€".encode()
    assert len(again) == 258 and again.eos_token_id == 256 and again.pad_token_id == 257


def test_tokenizer_specs_cache_bpe_and_load_pretrained(tmp_path: Path) -> None:
    calls = []

    def texts():
        calls.append(1)
        return english(20)

    a, dir_a = BPE(300).load_or_train(tmp_path, texts, "fp1")
    b, dir_b = BPE(300).load_or_train(tmp_path, texts, "fp1")
    assert calls == [1] and dir_a == dir_b and dir_a.parent == tmp_path / "tokenizers"
    assert a.encode(TRICKY) == b.encode(TRICKY)
    _, dir_c = BPE(300).load_or_train(tmp_path, texts, "fp2")
    assert calls == [1, 1] and dir_c != dir_a
    _, dir_p = BPE(300, path=str(tmp_path / "mine")).load_or_train(tmp_path, texts, "")
    assert dir_p == tmp_path / "mine" and (dir_p / "tokenizer.json").exists()
    _, dir_b = Bytes().load_or_train(tmp_path, texts, "")
    assert calls == [1, 1, 1] and dir_b.parent == tmp_path / "tokenizers"

    # a pretrained tokenizer without a pad token gets pad = eos
    nopad = byte_tokenizer(tmp_path / "tmp")
    nopad.pad_token = None
    save_tokenizer(nopad, tmp_path / "nopad")
    pre, pdir = Pretrained(str(tmp_path / "nopad")).load_or_train(tmp_path, texts, "")
    assert pdir == tmp_path / "nopad" and pre.pad_token == pre.eos_token == "<|endoftext|>"

    with pytest.raises(UserError, match="tokenizer.path=.*missing: no such directory"):
        Pretrained(str(tmp_path / "missing"))
    with pytest.raises(UserError, match="vocab_size=100"):
        BPE(100)


# ---- corpus
def test_resolve_sources_files_dirs_globs(tmp_path: Path) -> None:
    d = write_corpus(tmp_path)
    (d / ".git").mkdir()
    (d / ".git" / "HEAD").write_text("ref")
    (d / "sub").mkdir()
    (d / "sub" / "z.txt").write_text("nested")
    files = resolve_sources([str(d)])
    assert files == sorted(files) and d / "sub" / "z.txt" in files
    assert not any(".git" in p.parts for p in files)
    assert resolve_sources([str(d / "a*.txt")]) == sorted(d.glob("a*.txt"))
    assert resolve_sources([str(d / "**" / "*.txt"), str(d / "a00.txt")])[-1] == d / "sub" / "z.txt"  # deduped
    with pytest.raises(UserError, match="nothing.txt.*matches no file"):
        resolve_sources([str(d / "a00.txt"), str(tmp_path / "nothing.txt")])
    with pytest.raises(UserError, match=r"books/\*\.txt"):
        resolve_sources([str(tmp_path / "books/*.txt")])
    with pytest.raises(UserError, match="no input files"):
        resolve_sources([])


def test_stdlib_files_are_sorted_and_skip_tests() -> None:
    files = stdlib_files()
    assert len(files) > 300 and files == sorted(files)
    assert all(p.suffix == ".py" for p in files)
    assert not any({"site-packages", "test", "tests"} & set(p.parts) for p in files)


def test_non_utf8_names_path_and_offset_or_is_skipped(tmp_path: Path, caplog) -> None:
    good = tmp_path / "good.txt"
    good.write_text("fine text")
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"hello\xffworld")
    with pytest.raises(UserError, match=r"bad\.txt: not UTF-8 text at byte offset 5"):
        list(iter_documents([good, bad]))
    bad_jsonl = tmp_path / "bad.jsonl"
    bad_jsonl.write_bytes(b'{"text": "ok"}\n{"text": "\xc3("}\n')
    with pytest.raises(UserError, match=r"bad\.jsonl:2: not UTF-8 text at byte offset 25"):
        list(iter_documents([bad_jsonl]))
    stats: dict = {}
    with caplog.at_level("WARNING"):
        docs = list(iter_documents([good, bad, bad_jsonl], on_decode_error="skip", stats=stats))
    assert "skipped 2 file" in caplog.text
    assert docs == ["fine text"] and stats == {"documents": 1, "skipped_files": 2}


def test_jsonl_errors_name_path_and_line(tmp_path: Path) -> None:
    f = tmp_path / "d.jsonl"
    f.write_text('{"text": "a"}\n{"body": "b"}\n')
    with pytest.raises(UserError, match=r"d\.jsonl:2: no 'text' field"):
        list(iter_documents([f]))
    with pytest.raises(UserError, match=r"d\.jsonl:1: no 'body' field"):
        list(iter_documents([f], text_field="body"))
    g = tmp_path / "e.jsonl.gz"
    with gzip.open(g, "wt") as fh:
        fh.write('{"text": "a"}\n\nnot json\n')
    with pytest.raises(UserError, match=r"e\.jsonl\.gz:3: malformed JSON"):
        list(iter_documents([g]))


def test_hf_source_that_cannot_load_is_a_user_error() -> None:
    sources = resolve_sources(["hf:lmforge_no_such_dataset::validation"])
    assert str(sources[0]) == "hf:lmforge_no_such_dataset::validation"
    with pytest.raises(UserError, match="hf:lmforge_no_such_dataset::validation: cannot load dataset"):
        list(iter_documents(sources))


def test_empty_corpus_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "empty.txt").write_text("  \n\n")
    (tmp_path / "empty.jsonl").write_text('{"text": ""}\n')
    with pytest.raises(UserError, match="no non-empty document"):
        list(iter_documents(resolve_sources([str(tmp_path)])))
    dm = TextDataModule(paths=[str(tmp_path)], tokenizer=Bytes(), cache_dir=str(tmp_path / "cache"))
    with pytest.raises(UserError, match="no non-empty document"):
        dm.prepare_data()


# ---- packing and the DataModule
def make_dm(corpus: Path, cache: Path, **kw) -> TextDataModule:
    args = dict(paths=[str(corpus)], tokenizer=BPE(400), cache_dir=str(cache), block_size=16, batch_size=4,
                val_fraction=0.2, val_windows=8)
    return TextDataModule(**{**args, **kw})


def test_packing_is_exact(tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path)
    docs = list(iter_documents(resolve_sources([str(corpus)])))
    assert len(docs) == 12 and TRICKY in docs[1]
    dm = make_dm(corpus, tmp_path / "cache")
    dm.prepare_data()
    dm.setup("fit")
    train, val, meta = load_packed(dm.packed_dir)
    flags = [in_holdout(i, 0.2) for i in range(len(docs))]
    assert meta["split"] == "document" and meta["encoder"] == "tiktoken"
    eos = dm.tokenizer.eos_token_id
    train_docs = [d for d, v in zip(docs, flags) if not v]
    val_docs = [d for d, v in zip(docs, flags) if v]
    for tokens, want in [(train, train_docs), (val, val_docs)]:
        ids = tokens.tolist()
        assert ids[-1] == eos
        cuts = [-1] + [i for i, t in enumerate(ids) if t == eos]
        got = [dm.tokenizer.decode(ids[a + 1 : b]) for a, b in zip(cuts, cuts[1:])]
        assert got == want  # in order, one eos after each doc, the literal "<|endoftext|>" kept as text
    assert 1 <= meta["val_docs"] < len(docs) and meta["train_docs"] + meta["val_docs"] == len(docs)
    assert meta["val_bytes"] == sum(len(d.encode()) for d, v in zip(docs, flags) if v)
    assert meta["dtype"] == "uint16" and train.dtype == np.uint16 and meta["train_tokens"] == len(train)
    assert dm.val_bytes_per_token == pytest.approx(meta["val_bytes"] / meta["val_tokens"])
    assert dm.dims == {"vocab_size": len(dm.tokenizer)}
    assert AutoTokenizer.from_pretrained(meta["tokenizer_dir"]).encode(TRICKY) == dm.tokenizer.encode(TRICKY)


def test_encoding_threads_pack_the_same_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    corpus = Corpus(stdlib_files()[:40])
    docs = list(corpus.documents())
    tok = byte_tokenizer(tmp_path / "bytes")
    one, _ = pack_corpus(corpus, tok, cache_dir=tmp_path / "one", num_proc=1)
    monkeypatch.setattr(packing, "BATCH_BYTES", 64 << 10)  # many batches in flight, finished out of order
    threads = set()
    encode_batch = TextEncoder.encode_batch

    def recorded(self, texts):  # the real encoder, noting which thread ran it
        threads.add(threading.current_thread().name)
        return encode_batch(self, texts)

    monkeypatch.setattr(TextEncoder, "encode_batch", recorded)
    two, _ = pack_corpus(corpus, tok, cache_dir=tmp_path / "two", num_proc=2)
    assert len({t for t in threads if t.startswith("lmforge-tokenize")}) == 2  # both threads encoded
    for name in ("train.bin", "val.bin"):
        assert (one / name).read_bytes() == (two / name).read_bytes()
    _, val, meta = load_packed(two)
    assert meta["train_tokens"] + meta["val_tokens"] == sum(len(d.encode()) for d in docs) + len(docs)
    assert [p.name for p in (tmp_path / "two" / "corpus").iterdir() if p.name.startswith(".")] == []  # temp dirs gone


def test_second_prepare_reuses_cache(tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path)
    dm = make_dm(corpus, tmp_path / "cache")
    dm.prepare_data()
    assert dm.packed_built
    stamp = (dm.packed_dir / "train.bin").stat().st_mtime_ns
    again = make_dm(corpus, tmp_path / "cache")
    again.prepare_data()
    again.setup("fit")
    assert not again.packed_built and again.packed_dir == dm.packed_dir
    assert (dm.packed_dir / "train.bin").stat().st_mtime_ns == stamp
    (corpus / "a00.txt").write_text("changed content, so the fingerprint changes")
    changed = make_dm(corpus, tmp_path / "cache")
    changed.prepare_data()
    assert changed.packed_built and changed.packed_dir != dm.packed_dir


def test_training_stream_is_a_function_of_seed_and_index(tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path)
    a = make_dm(corpus, tmp_path / "cache")
    a.setup("fit")
    b = make_dm(corpus, tmp_path / "cache")
    b.setup("fit")
    other = make_dm(corpus, tmp_path / "cache", seed=1)
    other.setup("fit")
    for i in (0, 5, 10**9):
        assert torch.equal(a.train_dataset[i]["input_ids"], b.train_dataset[i]["input_ids"])
    assert any(not torch.equal(a.train_dataset[i]["input_ids"], other.train_dataset[i]["input_ids"]) for i in range(4))
    w = a.train_dataset[3]
    assert w["input_ids"].dtype == torch.long and w["input_ids"].shape == (16,)
    assert torch.equal(w["input_ids"][1:], w["labels"][:-1])
    # Sample i is the window at offsets([i]), and the offsets spread over the whole split.
    starts = a.train_dataset.offsets(list(range(2000)))
    tokens, top = np.asarray(a.train_dataset.tokens.data), a.train_dataset.max_start
    assert torch.equal(w["input_ids"], torch.from_numpy(tokens[starts[3]:starts[3] + 16].astype(np.int64)))
    assert 0 <= starts.min() < 0.02 * top and 0.98 * top < starts.max() <= top

    first = [batch for batch, _ in zip(a.train_dataloader(), range(3))]
    # A batch is the stack of its samples, sample i = the stream's i-th.
    for key in ("input_ids", "labels"):
        assert torch.equal(first[1][key], torch.stack([a.train_dataset[i][key] for i in range(4, 8)]))
    # As if resumed after 2 steps of batch 4: the position comes from the (restored) trainer's progress.
    b.trainer = SimpleNamespace(global_step=2, accumulate_grad_batches=1, world_size=1, global_rank=0)
    resumed = next(iter(b.train_dataloader()))
    assert torch.equal(resumed["input_ids"], first[2]["input_ids"])
    assert torch.equal(resumed["labels"], first[2]["labels"])

    val1 = [v["input_ids"] for v in a.val_dataloader()]
    val2 = [v["input_ids"] for v in b.val_dataloader()]
    assert len(val1) == 2 and all(torch.equal(x, y) for x, y in zip(val1, val2))
    windows = a.val_dataloader().dataset
    assert torch.equal(val1[0], torch.stack([windows[i]["input_ids"] for i in range(len(val1[0]))]))


def test_train_split_shorter_than_block(tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path)
    dm = make_dm(corpus, tmp_path / "cache", block_size=100_000)
    with pytest.raises(UserError, match="train split has .* fewer than block_size"):
        dm.setup("fit")


def test_bad_constructor_args(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="matches no file"):
        TextDataModule(paths=[str(tmp_path / "nope" / "*.txt")], tokenizer=Bytes())
    with pytest.raises(UserError, match="block_size=0"):
        TextDataModule(paths=[str(tmp_path)], block_size=0, tokenizer=Bytes())
    with pytest.raises(UserError, match="on_decode_error=ignore"):
        TextDataModule(paths=[str(tmp_path)], on_decode_error="ignore", tokenizer=Bytes())
    (tmp_path / "a.txt").write_text("text")
    with pytest.raises(UserError, match="data.tokenizer: expected a tokenizer of the tokenizer group"):
        TextDataModule(paths=[str(tmp_path)], tokenizer={"kind": "bpe"})


def test_fingerprint_depends_on_files_and_settings(tmp_path: Path) -> None:
    files = resolve_sources([str(write_corpus(tmp_path))])
    assert corpus_fingerprint(files, text_field="text") == corpus_fingerprint(files, text_field="text")
    assert corpus_fingerprint(files, text_field="text") != corpus_fingerprint(files, text_field="body")
    assert corpus_fingerprint(files) != corpus_fingerprint(files[1:])


class Recorder(__import__("lightning").LightningModule):
    """A tiny LM that records the first token of every training window it sees."""

    def __init__(self, vocab_size: int) -> None:
        super().__init__()
        self.emb = torch.nn.Embedding(vocab_size, 8)
        self.head = torch.nn.Linear(8, vocab_size)
        self.seen: list[list[int]] = []

    def training_step(self, batch, batch_idx):
        self.seen.append(batch["input_ids"][:, 0].tolist())
        logits = self.head(self.emb(batch["input_ids"]))
        return torch.nn.functional.cross_entropy(logits.flatten(0, 1), batch["labels"].flatten())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_resumed_trainer_continues_the_stream(tmp_path: Path) -> None:
    import lightning as L

    corpus = write_corpus(tmp_path)

    def fit(max_steps: int, ckpt_path: str | None = None, name: str = "run") -> list[list[int]]:
        dm = make_dm(corpus, tmp_path / "cache", block_size=32)
        dm.prepare_data()
        dm.setup("fit")
        model = Recorder(dm.dims["vocab_size"])
        trainer = L.Trainer(
            accelerator="cpu", devices=1, max_steps=max_steps, accumulate_grad_batches=2, limit_val_batches=0,
            logger=False, enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
            callbacks=[L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path / name, save_last=True)],
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trainer.fit(model, datamodule=dm, ckpt_path=ckpt_path)
        return model.seen

    full = fit(12)  # 24 batches: crosses "epoch" boundaries of this small corpus
    assert len(full) == 24
    fit(5, name="half")
    resumed = fit(12, ckpt_path=str(tmp_path / "half" / "last.ckpt"), name="resumed")
    assert resumed == full[10:]
