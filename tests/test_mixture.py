"""data.sources (a pretraining corpus mixed from named sources by weight) and data.document_mask (attention
that stays within each packed document): the mixed stream keeps its proportions, changes with a weight,
continues exactly on resume; each source is validated apart in a real run; every packed document ends
with the end-of-text token; a masked token does not see the previous document; bad input is one line."""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch the network (set before HF imports)
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import numpy as np
import pytest
import torch

from conftest import STDLIB, cli, ok, one_line_error
from lmforge.data.mixture import MixedWindows, parse_sources, stream_seed
from lmforge.data.packing import load_packed
from lmforge.data.text import TextDataModule
from lmforge.data.windows import Packed, document_positions
from lmforge.models.causal_lm import gpt2, llama, modern
from lmforge.tokenizers import Bytes

pytestmark = pytest.mark.xdist_group("mixture")


def token_files(folder: Path, lengths: list[int]) -> list[Packed]:
    """One token file per source, source s holding only the token s (a window tells where it came from)."""
    out = []
    for s, n in enumerate(lengths):
        path = folder / f"{s}.bin"
        np.full(n, s, dtype=np.uint16).tofile(path)
        out.append(Packed(path, "uint16", n))
    return out


def sources_of(windows: list[dict]) -> list[int]:
    return [int(w["input_ids"][0]) for w in windows]


def test_the_stream_draws_each_source_in_its_proportion(tmp_path: Path):
    specs = parse_sources({"web": {"paths": ["w"], "weight": 0.7}, "books": {"paths": ["b"], "weight": 0.2},
                           "code": {"paths": ["c"], "weight": 0.1}})
    assert [s.name for s in specs] == ["books", "code", "web"]  # by name: the command line's order does not matter
    stream = MixedWindows(token_files(tmp_path, [500, 300, 2000]), [s.weight for s in specs], 16,
                          stream_seed(0, specs))
    drawn = np.array(sources_of(stream.__getitems__(list(range(10_000)))))
    assert (drawn == stream.choose(np.arange(10_000))).all()  # each window is read from the source chosen
    shares = np.bincount(drawn, minlength=3) / len(drawn)
    assert np.abs(shares - [0.2, 0.1, 0.7]).max() < 0.02, shares
    # a source of weight 0 is never drawn
    idle = MixedWindows(token_files(tmp_path, [500, 300, 2000]), [1.0, 0.0, 1.0], 16, 0)
    assert 1 not in set(idle.choose(np.arange(10_000)).tolist())


def test_a_changed_weight_is_a_new_stream_and_the_same_weights_the_same(tmp_path: Path):
    def stream(web: float) -> list[tuple]:
        specs = parse_sources({"web": {"paths": ["w"], "weight": web}, "books": {"paths": ["b"], "weight": 0.3}})
        windows = MixedWindows(token_files(tmp_path, [4000, 4000]), [s.weight for s in specs], 16,
                               stream_seed(0, specs)).__getitems__(list(range(256)))
        return [tuple(w["input_ids"].tolist()) + (int(w["labels"][-1]),) for w in windows]

    assert stream(0.7) == stream(0.7)
    assert stream(0.7) != stream(0.6)
    assert sum(a != b for a, b in zip(stream(0.7), stream(0.6))) > 64  # not a shifted copy: a new draw


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> Path:
    """A reader's folder: web/ (two stdlib packages), books/ (a few modules as .txt), tiny/ (one short file)."""
    root = tmp_path_factory.mktemp("mixture")
    for package in ("json", "tomllib"):
        shutil.copytree(STDLIB / package, root / "web" / package, ignore=shutil.ignore_patterns("__pycache__"))
    (root / "books").mkdir()
    for name in ("bisect.py", "heapq.py", "textwrap.py", "this.py", "colorsys.py"):
        (root / "books" / f"{name}.txt").write_text((STDLIB / name).read_text())
    (root / "tiny").mkdir()
    (root / "tiny" / "note.txt").write_text("a short note, too short to hold out a window of it\n" * 12)
    return root


def mixed_datamodule(root: Path, **kw) -> TextDataModule:
    args = dict(sources={"web": {"paths": [str(root / "web")], "weight": 0.7},
                         "books": {"paths": [str(root / "books")], "weight": 0.3}},
                tokenizer=Bytes(), cache_dir=str(root / "cache"), block_size=32, batch_size=4, val_windows=8)
    dm = TextDataModule(**{**args, **kw})
    dm.prepare_data()
    dm.setup()
    return dm


def test_a_resumed_mixed_stream_continues_exactly(sources: Path):
    """The loader's state at step k (what a checkpoint keeps) gives the batch a fresh stream gives at step k."""
    dm = mixed_datamodule(sources)
    fresh = iter(dm.train_dataloader())
    batches = [next(fresh) for _ in range(6)]
    resumed = dm.train_dataloader()
    resumed.load_state_dict({"start": 4 * dm.batch_size})  # the state saved at global step 4
    restored = iter(resumed)
    for expected in batches[4:]:
        got = next(restored)
        assert torch.equal(got["input_ids"], expected["input_ids"]) and torch.equal(got["labels"], expected["labels"])
    assert not torch.equal(batches[0]["input_ids"], batches[4]["input_ids"])


def test_every_packed_document_ends_with_the_end_of_text_token(sources: Path):
    """The documents of a source, packed: split at each end-of-text token, the pieces are the documents."""
    dm = mixed_datamodule(sources)
    eos = dm.tokenizer.eos_token_id
    train, val, meta = load_packed(dm.mixture.packed_dirs["books"])
    assert meta["split"] == "position"  # 5 files: each one's tail is validation, its head training
    for ids, docs in ((train, meta["train_docs"]), (val, meta["val_docs"])):
        ids = np.asarray(ids)
        assert ids[-1] == eos and int((ids == eos).sum()) == docs == 5
    def texts(ids: np.ndarray) -> list[str]:  # the bytes before each end-of-text token
        return [bytes(p[:-1].tolist()).decode() for p in np.split(ids, np.flatnonzero(ids == eos) + 1)[:-1]]

    heads, tails = texts(np.asarray(train)), texts(np.asarray(val))
    originals = sorted((STDLIB / n).read_text() for n in ("bisect.py", "heapq.py", "textwrap.py", "this.py",
                                                          "colorsys.py"))
    assert sorted(h + t for h, t in zip(heads, tails)) == originals  # each document whole, its head then its tail


def test_document_masked_batches_carry_positions_restarting_after_each_end_of_text(sources: Path):
    dm = mixed_datamodule(sources, document_mask=True, block_size=256)
    eos = dm.tokenizer.eos_token_id
    assert "position_ids" in next(iter(dm.train_dataloader()))
    windows = dm.train_dataset.__getitems__(list(range(200)))
    ids, positions = (torch.stack([w[key] for w in windows]) for key in ("input_ids", "position_ids"))
    starts = torch.ones_like(ids, dtype=torch.bool)
    starts[:, 1:] = ids[:, :-1] == eos
    assert torch.equal(positions == 0, starts) and int(starts[:, 1:].sum()) > 0  # some window spans documents
    assert (positions[:, 1:] == torch.where(starts[:, 1:], 0, positions[:, :-1] + 1)).all()
    val = next(iter(dm.val_dataloader()))
    assert "position_ids" in val and set(val["source"].tolist()) == {0, 1}  # both sources in the first batch
    assert "position_ids" not in next(iter(mixed_datamodule(sources).train_dataloader()))  # default: unchanged


@pytest.mark.parametrize("build", [gpt2, llama, modern], ids=["gpt2", "llama", "modern"])
def test_a_masked_token_does_not_see_the_previous_document(build):
    torch.manual_seed(0)
    model = build(vocab_size=50, block_size=32, n_layer=2, n_head=2, n_embd=32).eval()
    model.reset_parameters()  # every residual branch live (modern starts them at zero: no context seen at all)
    eos = 49
    second = torch.randint(0, 48, (12,))
    windows = torch.stack([torch.cat([torch.randint(0, 48, (19,)), torch.tensor([eos]), second]) for _ in range(2)])
    assert not torch.equal(windows[0, :19], windows[1, :19])  # the same second document after two others
    positions = document_positions(windows, eos)
    assert positions[0, 20:].tolist() == list(range(12))
    with torch.no_grad():
        masked = model(windows, position_ids=positions).logits
        plain = model(windows).logits
        alone = model(second[None]).logits[0]
    assert torch.allclose(masked[0, 20:], masked[1, 20:], atol=1e-5)  # the previous document changed: no effect
    assert torch.allclose(masked[0, 20:], alone, atol=1e-5)  # as if the document were alone, from position 0
    assert not torch.allclose(plain[0, 20:], plain[1, 20:], atol=1e-3)  # without the mask it sees through
    assert torch.allclose(masked[0, :20], plain[0, :20], atol=1e-5)  # the first document: the same either way


@pytest.fixture(scope="module")
def mixed_run(sources: Path) -> Path:
    """A tiny debug=limit run on two sources with document masking, validated every 5 steps."""
    run = sources / "run"
    ok(cli("train", f"+data.sources.web.paths=[{sources / 'web'}]", "+data.sources.web.weight=0.7",
           f"+data.sources.books.paths=[{sources / 'books'}]", "+data.sources.books.weight=0.3",
           "data.document_mask=true", "debug=limit", "trainer.val_check_interval=5", "tokenizer=bytes",
           "model.block_size=64", "model.n_layer=1", "model.n_embd=32", "model.n_head=2", "data.batch_size=4",
           "data.val_windows=4", f"paths.cache_dir={sources / 'cache'}", f"hydra.run.dir={run}",
           "print_config=false", cwd=sources))
    return run


def test_a_mixed_run_logs_each_source_validation_loss_beside_the_mixed_one(mixed_run: Path, tmp_path: Path):
    with open(mixed_run / "csv" / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("val/loss")]
    assert len(rows) >= 2
    for row in rows:
        web, books, mixed = (float(row[f"val/loss{s}"]) for s in ("/web", "/books", ""))
        assert min(web, books) <= mixed <= max(web, books)  # the mean over both sources' windows
        assert all(float(row[k]) > 0 for k in ("val/bpb/web", "val/bpb/books", "val/bpb"))
    final = json.loads((mixed_run / "metrics.json").read_text())
    assert {"test/loss/web", "test/loss/books", "test/bpb/web", "test/bpb/books"} <= set(final)
    ok(cli("report", f"runs=[{mixed_run}]", f"out={tmp_path / 'report'}", cwd=tmp_path))
    html = (tmp_path / "report" / "report.html").read_text()
    assert "run · web" in html and "run · books" in html  # per-source curves beside the mixed ones


def test_bad_sources_are_one_line_naming_the_key(sources: Path):
    def error(*args: str) -> str:
        return one_line_error(cli("train", *args, "tokenizer=bytes", "model.block_size=64",
                                  f"paths.cache_dir={sources / 'cache'}", f"hydra.run.dir={sources / 'bad'}",
                                  "print_config=false", cwd=sources))

    web = "+data.sources.web.paths=[web/]"
    assert "data.sources.web.weight=-0.5" in error(web, "+data.sources.web.weight=-0.5")
    line = error(web, "+data.sources.web.weight=0", "+data.sources.books.paths=[books/]",
                 "+data.sources.books.weight=0")
    assert "data.sources" in line and "sum to 0" in line
    assert "data.sources.books.paths entry 'nowhere/*.txt' matches no file" in error(
        web, "+data.sources.books.paths=[nowhere/*.txt]")
    line = error(web, "+data.sources.tiny.paths=[tiny/]")
    assert "data.sources.tiny: its validation part has" in line and "fewer than block_size+1=65" in line
    assert "data.sources.web.path" in error("+data.sources.web.path=[web/]")
    assert "+data.sources.web.weight=..." in error(web, "data.sources.web.weight=0.7")  # no '+': told to add it
    assert "data.paths and data.sources" in error(web, "data.paths=[books/]")
    assert "data.document_mask=true needs a native GPT" in error("data.paths=[books/]", "data.document_mask=true",
                                                                  "model.impl=hf")
