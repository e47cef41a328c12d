"""Telemetry of every training run: `train/mfu` (LM runs), `train/peak_mem_gb` and `train/data_wait`,
logged on the steps the loggers write, in csv/metrics.csv, metrics.json and `lmforge report`."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest

from conftest import cli, metrics, ok

TELEMETRY = ("train/mfu", "train/peak_mem_gb", "train/data_wait")

SLOW_DATA = '''
import time
from lmforge.data.text import TextDataModule

class SlowText(TextDataModule):
    """The text data, its training batches each collated 0.3 s late (a loader that cannot keep up)."""
    def train_dataloader(self):
        loader = super().train_dataloader()
        collate = loader.collate_fn

        def slow_collate(samples):
            time.sleep(0.3)
            return collate(samples)

        loader.collate_fn = slow_collate
        return loader
'''


def pretrain(folder: Path, corpus: Path, *extra: str) -> Path:
    """6 steps of a tiny GPT on `corpus`, the loggers writing every other step; Throughput's window starts
    after one batch (its default 5 would leave it nothing to measure in 6 steps). No test, a short
    validation and sample: the training steps are what is measured."""
    run = folder / "run"
    ok(cli("train", f"data.paths=[{corpus}]", "tokenizer.vocab_size=300", "model.block_size=64", "data.batch_size=4",
           "model.n_layer=2", "trainer.max_steps=6", "trainer.max_time=null", "trainer.log_every_n_steps=2",
           "callbacks.throughput.warmup_steps=1", "test=false", "data.val_windows=8",
           "trainer.num_sanity_val_steps=0", "max_new_tokens=8", f"paths.cache_dir={folder.parent / 'cache'}",
           f"hydra.run.dir={run}", "print_config=false", *extra, cwd=folder))
    return run


@pytest.fixture(scope="module")
def runs(tmp_path_factory, corpus: Path) -> dict[str, Path]:
    """The same short pretraining run twice: with the normal data, and with a training loader 0.3 s late
    per batch (a data module of the test's own, loaded by `data._target_` from a folder on sys.path)."""
    root = tmp_path_factory.mktemp("telemetry")
    (root / "slow").mkdir()
    (root / "slow" / "slow_data.py").write_text(SLOW_DATA)
    (root / "normal").mkdir()
    normal = pretrain(root / "normal", corpus)
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(root / "slow"))
        slow = pretrain(root / "slow", corpus, "data._target_=slow_data.SlowText")
    return {"normal": normal, "slow": slow}


def rows(run: Path) -> list[dict]:
    with open(run / "csv" / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def logged_at(run: Path, name: str) -> dict[int, float]:
    """csv step -> value, for the rows where `name` was logged."""
    return {int(row["step"]): float(row[name]) for row in rows(run) if row.get(name)}


def test_telemetry_is_logged_on_the_written_steps_and_kept_in_metrics_json(runs):
    run = runs["normal"]
    written = set(logged_at(run, "train/loss"))
    assert written == {1, 3, 5}  # optimizer steps 2, 4 and 6 (the CSV counts from 0)
    assert set(logged_at(run, "train/peak_mem_gb")) == set(logged_at(run, "train/data_wait")) == written
    # MFU needs tokens/s, which needs two timed batches after the first one: steps 4 and 6.
    assert set(logged_at(run, "train/mfu")) == {3, 5}
    ram_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    for values in (logged_at(run, name).values() for name in TELEMETRY):
        assert values
    assert all(0 < v <= 1 for v in logged_at(run, "train/mfu").values())
    assert all(0.05 < v < ram_gb for v in logged_at(run, "train/peak_mem_gb").values())
    assert all(0 <= v <= 1 for v in logged_at(run, "train/data_wait").values())
    peaks = list(logged_at(run, "train/peak_mem_gb").values())
    assert peaks == sorted(peaks)  # a peak so far never falls
    final = metrics(run)
    for name in TELEMETRY:
        assert final[name] == logged_at(run, name)[5]  # the last logged value


def test_a_slow_data_loader_shows_as_data_wait(runs):
    normal = list(logged_at(runs["normal"], "train/data_wait").values())
    slow = list(logged_at(runs["slow"], "train/data_wait").values())
    # 0.3 s of every step is waiting: most of a tiny model's step, still a share on a busy machine.
    assert min(slow) > max(normal) + 0.1 and sum(slow) / len(slow) > 0.2, (slow, normal)


def test_the_report_of_a_run_shows_its_telemetry(runs, tmp_path: Path):
    out = tmp_path / "out"
    ok(cli("report", f"runs=[{runs['normal']}]", f"out={out}", cwd=tmp_path))
    with open(out / "report.csv", newline="") as f:
        (row,) = list(csv.DictReader(f))
    for name in TELEMETRY:
        assert float(row[name]) == metrics(runs["normal"])[name]  # a column of the table
    html = (out / "report.html").read_text()
    for title in ("mfu", "peak_mem_gb", "data_wait"):  # a curve each
        assert f'"title":{{"text":"{title}"' in html.replace(" ", ""), title
