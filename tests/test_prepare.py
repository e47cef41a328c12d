"""`lmforge prepare`: real HTML pages in WARC files (written here with warcio) through extraction, each
filter, exact and MinHash near-duplicate removal and PII masking, on the local executor with 2 workers;
an interrupted prepare continued; bad input in one line; a pretraining run on the output."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pytest
from datatrove.pipeline.base import PipelineStep

from conftest import cli, ok, one_line_error
from web_pages import EMAIL, pages, write_warc

pytestmark = pytest.mark.xdist_group("prepare")
BLOCK = "prepare.url_filter.domains=[spam.example.net]"
PII = "prepare.pii={_target_:datatrove.pipeline.formatters.PIIFormatter}"


def documents(out: Path) -> list[dict]:
    return [json.loads(line) for shard in sorted(out.glob("*.jsonl.gz")) for line in gzip.open(shard, "rt")]


def removed(stats: dict) -> dict[str, dict]:
    """{step name: its removal reasons} over every stage."""
    return {step["step"].split(": ", 1)[-1]: step["removed"] for stage in stats["stages"] for step in stage["steps"]
            if step["removed"]}


@pytest.fixture(scope="module")
def web(tmp_path_factory):
    """Two WARC files of planted pages (one with an image record), prepared with 2 tasks on 2 workers."""
    root = tmp_path_factory.mktemp("web")
    planted = pages()
    write_warc(root / "crawl" / "a.warc.gz", planted[::2], image=True)
    write_warc(root / "crawl" / "b.warc.gz", planted[1::2])
    proc = ok(cli("prepare", "inputs=[crawl/*.warc.gz]", "output_dir=out/web", BLOCK, PII,
                  "executor.tasks=2", "executor.workers=2", cwd=root))
    return root, planted, proc


def test_extraction_filters_and_dedup_remove_exactly_the_planted_pages(web):
    root, planted, proc = web
    out = root / "out" / "web"
    docs = documents(out)
    assert sorted(d["metadata"]["url"] for d in docs) == sorted(url for url, _, why in planted if why == "kept")
    for doc in docs:  # the article's text, not the markup or the page's navigation
        assert "<p>" not in doc["text"] and "Home" not in doc["text"] and "Contact us" not in doc["text"]
        assert doc["metadata"]["language"] == "en"
    assert sorted(p.name for p in out.iterdir()) == [".prepare", ".prepared", "00000.jsonl.gz", "00001.jsonl.gz",
                                                      "stats.json"]
    stats = json.loads((out / "stats.json").read_text())
    assert stats["documents_in"] == len(planted) + 1 and stats["documents_out"] == len(docs)
    assert removed(stats) == {
        "🕷 Web archive": {"skipped_not_html": 1}, "⛔ URL blocklist": {"blocked_domain": 1},
        "🌍 Language": {"other_language": 2}, "👯 Gopher Repetition": {"dup_line_frac": 1},
        "🥇 Gopher Quality": {"gopher_below_alpha_threshold": 1}, "⛰ C4 Quality": {"lorem_ipsum": 1},
        "🍷 FineWeb Quality": {"line_punct_ratio": 1},
        "💥 exact-deduplication stage 3": {"exact_duplicate": 1}, "🎯 MinHash stage 4": {"near_duplicate": 1}}
    assert f"prepare: {len(planted) + 1} documents in, {len(docs)} out (2 shards)" in proc.stdout
    assert "near_duplicate 1" in proc.stdout and "lorem_ipsum 1" in proc.stdout


def test_pii_masked(web):
    root, _, _ = web
    story = next(d for d in documents(root / "out" / "web") if d["metadata"]["url"].endswith("/story/2"))
    assert "Write to" in story["text"] and EMAIL not in story["text"]


def test_rerun_reuses_the_output(web):
    root, _, _ = web
    out = root / "out" / "web"
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    proc = ok(cli("prepare", "inputs=[crawl/*.warc.gz]", "output_dir=out/web", BLOCK, PII, "executor.tasks=2",
                  "executor.workers=1", cwd=root))  # workers do not change the result
    assert "reused" in proc.stdout and {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before
    other = cli("prepare", "inputs=[crawl/*.warc.gz]", "output_dir=out/web", cwd=root)  # other settings
    assert "holds the output of another prepare" in one_line_error(other)


def test_pretraining_on_the_output(web):
    root, _, _ = web
    from lmforge.data.prepared import resolve_corpus

    assert [p.name for p in resolve_corpus([root / "out" / "web"])] == ["00000.jsonl.gz", "00001.jsonl.gz"]
    proc = ok(cli("train", "data.paths=[out/web]", "debug=limit", "trainer.max_epochs=1", "callbacks=minimal",
                  "tokenizer=bytes", "model.n_layer=1", "model.n_embd=32", "model.n_head=2", "model.block_size=64",
                  "data.batch_size=4", "data.val_windows=4", "hydra.run.dir=run", "paths.cache_dir=cache",
                  "print_config=false", cwd=root))
    assert "test/loss" in proc.stdout


class FailOnce(PipelineStep):
    """Passes documents on; task 1 dies the first time it runs (as a killed worker would). Counts each task's
    runs in `runs`."""

    name = "fail once"

    def __init__(self, runs: str) -> None:
        super().__init__()
        self.runs = runs

    def run(self, data, rank: int = 0, world_size: int = 1):
        count = Path(self.runs) / f"task{rank}"
        n = int(count.read_text()) if count.exists() else 0
        count.write_text(str(n + 1))
        if rank == 1 and n == 0:
            raise RuntimeError("task 1 died")
        yield from data


def test_interrupted_prepare_continues_with_unfinished_tasks(web, tmp_path):
    root, planted, _ = web
    (tmp_path / "runs").mkdir()
    args = ["prepare", f"inputs=[{root}/crawl/*.warc.gz]", "output_dir=out", BLOCK, "executor.tasks=2",
            "prepare.exact_dedup=null", "prepare.near_dedup=null",  # the filter stage is the point here
            f"prepare.pii={{_target_:test_prepare.FailOnce,runs:{tmp_path / 'runs'}}}"]
    first = cli(*args, cwd=tmp_path)
    assert first.returncode == 1 and "task 1 died" in first.stderr
    assert not (tmp_path / "out" / ".prepared").exists() and not list((tmp_path / "out").glob("*.jsonl.gz"))
    half = cli("train", "data.paths=[out]", "debug=limit", cwd=tmp_path)  # never read as a finished output
    assert "unfinished lmforge prepare" in one_line_error(half)
    ok(cli(*args, cwd=tmp_path))
    assert {p.name: p.read_text() for p in (tmp_path / "runs").iterdir()} == {"task0": "1", "task1": "2"}
    assert len(documents(tmp_path / "out")) == sum(why in ("kept", "exact_dedup", "near_dedup") for _, _, why in planted)


def test_jsonl_parquet_wet_and_text_inputs(tmp_path):
    import io
    import random

    import pyarrow as pa
    import pyarrow.parquet as pq
    from warcio.warcwriter import WARCWriter

    from web_pages import paragraphs

    rng = random.Random(1)
    texts = ["\n".join(paragraphs(rng)) for _ in range(5)]
    (tmp_path / "dump.jsonl").write_text("".join(json.dumps({"body": t}) + "\n" for t in [texts[0], texts[1], texts[0]]))
    pq.write_table(pa.table({"body": [texts[2]]}), tmp_path / "rows.parquet")
    with open(tmp_path / "crawl.warc.wet.gz", "wb") as f:  # the text conversions of a crawl (no HTML)
        writer = WARCWriter(f, gzip=True)
        writer.write_record(writer.create_warc_record("http://example.org/wet", "conversion",
                                                      payload=io.BytesIO(texts[3].encode()),
                                                      warc_content_type="text/plain"))
    (tmp_path / "books").mkdir()
    (tmp_path / "books" / "a.txt").write_text(texts[4])
    (tmp_path / "books" / "b.md").write_text(texts[1])  # a copy of a JSONL document
    proc = ok(cli("prepare", "inputs=[dump.jsonl,rows.parquet,crawl.warc.wet.gz,books/]", "output_dir=out",
                  "prepare=jsonl", "prepare.reader.text_key=body", cwd=tmp_path))
    assert sorted(d["text"] for d in documents(tmp_path / "out")) == sorted(texts)
    assert "prepare: 7 documents in, 5 out" in proc.stdout and "exact_duplicate 2" in proc.stdout


def test_bad_input_is_one_line(web, tmp_path):
    root, _, _ = web
    whole = (root / "crawl" / "a.warc.gz").read_bytes()
    (tmp_path / "cut.warc.gz").write_bytes(whole[:len(whole) - 200])
    line = one_line_error(cli("prepare", "inputs=[cut.warc.gz]", "output_dir=o", cwd=tmp_path))
    assert "cut.warc.gz" in line and "truncated" in line
    shutil.copy(root / "crawl" / "a.warc.gz", tmp_path / "a.warc.gz")
    line = one_line_error(cli("prepare", "inputs=[a.warc.gz]", "output_dir=o2", "prepare.reader.non_html=error",
                              cwd=tmp_path))
    assert "a.warc.gz" in line and "image/png, not HTML" in line
    line = one_line_error(cli("prepare", "inputs=[crawl/*.warc]", "output_dir=o3", cwd=tmp_path))
    assert line == "error: inputs entry 'crawl/*.warc' matches no file"
    for key, value in [("prepare.gopher_quality.max_symbol_word_ratio", 2), ("prepare.language.threshold", -1),
                       ("prepare.near_dedup.buckets", 0), ("executor.tasks", 0)]:
        line = one_line_error(cli("prepare", "inputs=[a.warc.gz]", "output_dir=o4", f"{key}={value}", cwd=tmp_path))
        assert f"'{key}'" in line
    assert not (tmp_path / "o3").exists() and not (tmp_path / "o4").exists()
    if shutil.which("sbatch") is None:
        line = one_line_error(cli("prepare", "inputs=[a.warc.gz]", "output_dir=o5", "executor=slurm",
                                  "executor.partition=cpu", cwd=tmp_path))
        assert "sbatch not found" in line
