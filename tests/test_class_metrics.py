"""Classification evaluation of real runs: per-class precision, recall and F1 in metrics.json and the
printed table, the confusion matrix file they agree with, its heatmap in `lmforge report` (headless
Chromium), the sequence classifier's label names; SFT's exact match on test prompts."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest

from conftest import cli, metrics, ok, one_line_error
from test_finetune_cli import classify_args
from test_report import chromium_dom, rendered_charts

DIGITS = [str(d) for d in range(10)]


@pytest.fixture(scope="module")
def mlp_debug_run(tmp_path_factory) -> tuple[Path, str]:
    """A short MLP run on the bundled digits (3 epochs of 5 batches, a test of 2 batches) and its stdout."""
    root = tmp_path_factory.mktemp("mlp-classes")
    proc = ok(cli("train", "experiment=mnist_mlp", "data.download=false", "debug=limit", "print_config=false",
                  f"hydra.run.dir={root / 'run'}", cwd=root))
    return root / "run", proc.stdout


def confusion(run: Path) -> tuple[list[str], list[list[int]]]:
    data = json.loads((run / "confusion_matrix.json").read_text())
    assert data["rows"] == "true" and data["columns"] == "predicted"
    return data["labels"], data["counts"]


def printed_table(stdout: str) -> dict[str, list[float]]:
    """class -> [precision, recall, f1, support] from the printed per-class table."""
    lines = stdout.split("per-class test metrics:\n", 1)[1].splitlines()
    assert lines[0].split() == ["class", "precision", "recall", "f1", "support"]
    rows = {}
    for line in lines[1:]:
        match = re.fullmatch(r"(\S+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+(\d+)", line)
        if not match:
            break
        rows[match.group(1)] = [float(x) for x in match.groups()[1:]]
    return rows


def assert_consistent(run: Path, stdout: str, names: list[str]) -> list[list[int]]:
    """metrics.json, the printed table and confusion_matrix.json tell the same per-class story."""
    result = metrics(run)
    labels, counts = confusion(run)
    assert labels == names
    total = sum(map(sum, counts))
    assert result["test/acc"] == pytest.approx(sum(counts[i][i] for i in range(len(names))) / total, abs=1e-6)
    table = printed_table(stdout)
    assert list(table) == names
    for i, name in enumerate(names):
        row, column = sum(counts[i]), sum(r[i] for r in counts)
        recall = counts[i][i] / row if row else 0.0
        precision = counts[i][i] / column if column else 0.0
        assert result[f"test/recall/{name}"] == pytest.approx(recall, abs=1e-6), name
        assert result[f"test/precision/{name}"] == pytest.approx(precision, abs=1e-6), name
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        assert result[f"test/f1/{name}"] == pytest.approx(f1, abs=1e-6), name
        assert table[name] == pytest.approx([precision, recall, f1, row], abs=5e-4), name
    return counts


def test_mlp_run_has_per_class_scores_agreeing_with_its_confusion_matrix(mlp_debug_run):
    run, stdout = mlp_debug_run
    result = metrics(run)
    for score in ("precision", "recall", "f1"):
        assert {k for k in result if k.startswith(f"test/{score}/")} == {f"test/{score}/{d}" for d in DIGITS}
    counts = assert_consistent(run, stdout, DIGITS)
    assert sum(map(sum, counts)) == 2 * 32  # debug=limit: two test batches of 32
    assert stdout.index("per-class test metrics:") < stdout.index("run directory:")


def test_eval_prints_and_writes_per_class_scores_of_the_whole_test_split(mlp_debug_run, tmp_path: Path):
    run, _ = mlp_debug_run
    out = tmp_path / "eval"
    proc = ok(cli("eval", f"ckpt_path={run}", f"hydra.run.dir={out}", "print_config=false", cwd=tmp_path))
    counts = assert_consistent(out, proc.stdout, DIGITS)
    assert sum(map(sum, counts)) == 360  # the digits' test split: 20 % of 1,797
    assert [sum(row) for row in counts] == [int(v[3]) for v in printed_table(proc.stdout).values()]


def test_report_draws_each_confusion_matrix_as_a_heatmap(mlp_debug_run, tmp_path: Path):
    run, _ = mlp_debug_run
    out = tmp_path / "report"
    proc = ok(cli("report", f"runs=[{run}]", f"out={out}", cwd=tmp_path))
    with open(out / "report.csv", newline="") as f:
        header = next(csv.reader(f))
    assert "test/acc" in header and not any(h.startswith("test/recall/") for h in header)  # per class: on request
    assert "test/recall/" not in proc.stdout
    dom = chromium_dom(out / "report.html", tmp_path)
    assert ">Confusion matrices (test)<" in dom
    heatmaps = [c for c in rendered_charts(dom).values() if 'class="hm"' in c]
    assert len(heatmaps) == 1
    heatmap = heatmaps[0]
    assert "confusion matrix" in heatmap and ">predicted<" in heatmap and ">true<" in heatmap
    _, counts = confusion(run)
    # Every cell's count is written in it: 100 cells of digits.
    cell_texts = re.findall(r'<g class="heatmap-label"><text[^>]*>(\d+)</text>', heatmap)
    assert sorted(map(int, cell_texts)) == sorted(c for row in counts for c in row)


def test_a_malformed_confusion_matrix_is_one_line(mlp_debug_run, tmp_path: Path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(mlp_debug_run[0], run, ignore=shutil.ignore_patterns("checkpoints"))
    (run / "confusion_matrix.json").write_text('{"labels": ["a", "b"], "counts": [[1, 2]]}')
    line = one_line_error(cli("report", f"runs=[{run}]", f"out={tmp_path / 'out'}", cwd=tmp_path))
    assert "confusion_matrix.json" in line and "one row and one column per label" in line


def test_sequence_classifier_scores_each_label_by_name(review_files, tiny_hf_lm, tmp_path: Path):
    run = tmp_path / "clf"
    proc = ok(cli(*classify_args(review_files, f"init_from={tiny_hf_lm}", "trainer.max_epochs=1",
                                 f"paths.cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={run}"), cwd=tmp_path))
    counts = assert_consistent(run, proc.stdout, ["neg", "pos"])
    with open(run / "predictions.csv") as f:  # the matrix counts the written predictions
        rows = list(csv.DictReader(f))
    index = {"neg": 0, "pos": 1}
    expected = [[0, 0], [0, 0]]
    for r in rows:
        expected[index[r["label"]]][index[r["predicted"]]] += 1
    assert counts == expected and sum(map(sum, counts)) == 40


def test_sft_exact_match_on_test_prompts_matches_its_generations(tiny_hf_lm, tmp_path: Path):
    """A task a tiny model learns in a few steps (every answer is 'ok'); test/exact_match is the share of
    the written generations equal to their reference."""
    rows = [{"prompt": f"Say ok {i}.", "response": "ok"} for i in range(40)]
    train, test = tmp_path / "train.jsonl", tmp_path / "test.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in rows[:30]))
    test.write_text("".join(json.dumps(r) + "\n" for r in rows[30:]))
    run = tmp_path / "sft"
    proc = ok(cli("train", "experiment=finetune_sft", f"init_from={tiny_hf_lm}", f"data.train_file={train}",
                  f"data.test_file={test}", "data.max_length=32", "trainer.max_epochs=3", "optimizer.lr=0.01",
                  "module.sample_max_new_tokens=6", "module.exact_match_prompts=8", "module.num_samples=0",
                  f"paths.cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={run}", "print_config=false",
                  cwd=tmp_path))
    generations = [json.loads(line) for line in (run / "test_generations.jsonl").read_text().splitlines()]
    assert len(generations) == 8 and set(generations[0]) == {"prompt", "reference", "generated"}
    assert generations[0]["prompt"] == "Say ok 30.\n### Response:\n" and generations[0]["reference"] == "ok"
    share = sum(g["generated"].strip() == g["reference"] for g in generations) / 8
    assert metrics(run)["test/exact_match"] == pytest.approx(share)
    assert share > 0.5, generations
    assert f"test/exact_match: {round(share * 8)} of 8" in proc.stdout + proc.stderr
