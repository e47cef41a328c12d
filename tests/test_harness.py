"""lm-evaluation-harness through lmforge: the `lmforge` adapter scores a run exactly as lm-eval's own `hf`
model scores its export (multiple choice, whole lines from an empty context, rolling log-likelihood and
greedy generation); `lmforge eval
harness.tasks=[...]` prints, writes and fails as documented; `callbacks=harness` logs curves that a
resumed run continues row for row, and that DDP scores split across ranks to the single-process result."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from conftest import cli, csv_metric, lmforge, metrics, ok, one_line_error

pytestmark = pytest.mark.xdist_group("harness")

TASKS = ["lmforge_python_mc", "lmforge_python_pairs", "lmforge_python_gen", "lmforge_python_text"]
LIMIT = 8  # prompts of several lengths in one batch of 4: padding and batching are exercised


@pytest.fixture(scope="module")
def exported(pretrain_run, tmp_path_factory) -> Path:
    run, _ = pretrain_run
    target = tmp_path_factory.mktemp("export") / "model"
    ok(cli("export", f"ckpt_path={run}", f"export_dir={target}", cwd=target.parent))
    return target


def lm_eval_hf(model_dir: Path) -> dict:
    """lm-eval's own `hf` model on the export, on the same tasks, limit, batch size and seeds."""
    from lm_eval.evaluator import simple_evaluate
    from lm_eval.models.huggingface import HFLM

    from lmforge.evaluation.harness import BOOTSTRAP_ITERS
    from lmforge.evaluation.task_catalog import load_tasks

    built, manager = load_tasks(TASKS)
    return simple_evaluate(model=HFLM(pretrained=str(model_dir), batch_size=4, device="cpu"), tasks=built,
                           task_manager=manager, limit=LIMIT, log_samples=True, bootstrap_iters=BOOTSTRAP_ITERS,
                           random_seed=0, numpy_random_seed=0, torch_random_seed=0, fewshot_random_seed=0)


@pytest.mark.slow  # two evaluations of four tasks, with generation: 12-20 s on 2 cores
def test_the_adapter_agrees_with_lm_evals_hf_model(pretrain_run, exported: Path):
    from lmforge.evaluation.harness import evaluate
    from lmforge.evaluation.harness import metrics as harness_metrics
    from lmforge.experiment.load import load_model

    run, _ = pretrain_run
    model, tokenizer, _ = load_model(run, causal=True)  # the run itself: no export step
    ours = evaluate(model, tokenizer, TASKS, limit=LIMIT, batch_size=4, log_samples=True)
    theirs = lm_eval_hf(exported)

    ours_metrics, theirs_metrics = harness_metrics(ours), harness_metrics(theirs)
    assert set(ours_metrics) == set(theirs_metrics)
    for task, metric in [("lmforge_python_mc", "acc"), ("lmforge_python_mc", "acc_norm"), ("lmforge_python_pairs", "acc"),
                         ("lmforge_python_gen", "exact_match"), ("lmforge_python_text", "bits_per_byte"),
                         ("lmforge_python_text", "word_perplexity")]:
        assert f"harness/{task}/{metric}" in ours_metrics
    for key, value in theirs_metrics.items():
        assert math.isclose(ours_metrics[key], value, rel_tol=1e-4, abs_tol=1e-4), (key, ours_metrics[key], value)
    # Example by example: every choice's log-likelihood and greedy flag, every generated string.
    for task in TASKS:
        mine = sorted(ours["samples"][task], key=lambda s: s["doc_id"])
        lm_evals = sorted(theirs["samples"][task], key=lambda s: s["doc_id"])
        assert len(mine) == len(lm_evals) == LIMIT
        for a, b in zip(mine, lm_evals):
            for resp_a, resp_b in zip(a["resps"], b["resps"]):
                if task == "lmforge_python_gen":
                    assert resp_a == resp_b
                    continue
                score_a = resp_a[0][0] if isinstance(resp_a[0], (list, tuple)) else resp_a[0]
                score_b = resp_b[0][0] if isinstance(resp_b[0], (list, tuple)) else resp_b[0]
                assert abs(score_a - score_b) < 1e-4, (task, a["doc_id"], score_a, score_b)
    generated = [resp[0] for sample in ours["samples"]["lmforge_python_gen"] for resp in sample["resps"]]
    assert any(text.strip() for text in generated), generated  # the comparison is of real text


def test_eval_with_harness_tasks_prints_writes_and_takes_your_own_tasks(pretrain_run, tmp_path: Path):
    run, _ = pretrain_run
    # A user's own task: a YAML and its JSON lines in one folder, the data file named relative to it.
    tasks = tmp_path / "my_tasks"
    tasks.mkdir()
    with open(tasks / "arith.jsonl", "w") as f:
        for i in range(5):
            f.write(json.dumps({"question": f"x = {i} +", "choices": [" 1", " one"], "label": 0}) + "\n")
    (tasks / "my_arith.yaml").write_text(
        "task: my_arith\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: arith.jsonl\n"
        "output_type: multiple_choice\ntest_split: test\ndoc_to_text: '{{question}}'\n"
        "doc_to_choice: '{{choices}}'\ndoc_to_target: '{{label}}'\ntarget_delimiter: ''\n")
    out = tmp_path / "eval"
    proc = ok(cli("eval", f"ckpt_path={run}", "harness.tasks=[lmforge_python_mc,my_arith]",
                  f"harness.include_path={tasks}", "harness.limit=4", "harness.batch_size=2",
                  "harness.log_samples=true", f"hydra.run.dir={out}", cwd=tmp_path))
    assert "task" in proc.stdout and "value ± stderr" in proc.stdout
    assert re.search(r"lmforge_python_mc +acc +0\.\d{4} ± 0\.\d{4}", proc.stdout), proc.stdout
    written = metrics(out)
    for key in ("harness/lmforge_python_mc/acc", "harness/lmforge_python_mc/acc_norm", "harness/my_arith/acc"):
        assert 0.0 <= written[key] <= 1.0, key
    assert "harness/lmforge_python_mc/acc_stderr" in written
    results = json.loads((out / "harness_results.json").read_text())
    assert results["results"]["lmforge_python_mc"]["acc,none"] == written["harness/lmforge_python_mc/acc"]
    assert set(results["results"]) == {"lmforge_python_mc", "my_arith"}
    samples = (out / "harness_samples.jsonl").read_text().splitlines()
    assert len(samples) == 8 and json.loads(samples[0])["task"]
    assert f"run directory: {out}" in proc.stdout + proc.stderr


def test_a_missing_include_path_is_one_line(pretrain_run, tmp_path: Path):
    run, _ = pretrain_run
    line = one_line_error(cli("eval", f"ckpt_path={run}", "harness.tasks=[lmforge_python_mc]",
                              "harness.include_path=no/such/dir", f"hydra.run.dir={tmp_path / 'e'}", cwd=tmp_path))
    assert "harness.include_path" in line and "no/such/dir" in line


@pytest.mark.slow  # indexes lm-eval's ~15,000 task configs once (the names are not local)
def test_an_unknown_task_and_a_hub_task_offline_are_one_line_each(pretrain_run, tmp_path: Path):
    run, _ = pretrain_run
    line = one_line_error(cli("eval", f"ckpt_path={run}", "harness.tasks=[no_such_task]",
                              f"hydra.run.dir={tmp_path / 'a'}", cwd=tmp_path))
    assert "harness.tasks" in line and "no_such_task" in line and "lmforge_python_mc" in line
    line = one_line_error(cli("eval", f"ckpt_path={run}", "harness.tasks=[arc_easy]", "harness.limit=2",
                              f"hydra.run.dir={tmp_path / 'b'}", cwd=tmp_path))
    assert "arc_easy" in line and "offline" in line and "data_files" in line


def harness_training(corpus: Path, cache: Path, max_steps: int) -> list[str]:
    return ["train", f"data.paths=[{corpus}]", "tokenizer.vocab_size=300", f"paths.cache_dir={cache}",
            "model.block_size=64", "model.n_layer=1", "model.n_embd=32", "model.n_head=2", "data.batch_size=4",
            "data.val_windows=4", f"trainer.max_steps={max_steps}", "trainer.max_time=null",
            "trainer.val_check_interval=3", "trainer.limit_val_batches=1", "callbacks=harness",
            "callbacks.harness.every_n_steps=3", "callbacks.harness.limit=3",
            "callbacks.harness.tasks=[lmforge_python_mc,lmforge_python_gen]", "callbacks.text_samples.every_n_steps=1000",
            "test=false", "print_config=false"]


@pytest.mark.slow
def test_harness_curves_while_training_and_a_resumed_run_neither_repeats_nor_drops_a_row(corpus, tmp_path: Path):
    run = tmp_path / "run"
    ok(cli(*harness_training(corpus, tmp_path / "cache", 6), "logger=many", f"hydra.run.dir={run}", cwd=tmp_path))
    ok(cli(*harness_training(corpus, tmp_path / "cache", 12), "logger=many", f"hydra.run.dir={run}", "resume=auto",
           cwd=tmp_path))
    import csv

    with open(run / "csv" / "metrics.csv") as f:
        rows = [row for row in csv.DictReader(f) if row.get("harness/lmforge_python_mc/acc")]
    # scored after steps 3, 6 | 9, 12: logged, as Lightning logs that step's validation, at step - 1
    assert [int(row["step"]) for row in rows] == [2, 5, 8, 11]
    assert all(row.get("harness/lmforge_python_gen/exact_match") for row in rows)
    assert len(csv_metric(run, "harness/lmforge_python_mc/acc_norm")) == 4
    assert metrics(run)["harness/lmforge_python_mc/acc"] == float(rows[-1]["harness/lmforge_python_mc/acc"])
    # TensorBoard and W&B got them too
    events = b"".join(p.read_bytes() for p in (run / "tensorboard").rglob("events.out.tfevents.*"))
    assert b"harness/lmforge_python_mc/acc" in events
    wandb_files = b"".join(p.read_bytes() for p in (run / "wandb").rglob("*.wandb"))
    assert b"harness/lmforge_python_mc/acc" in wandb_files
    # `lmforge report` draws them as curves: one chart per task metric
    ok(cli("report", f"runs=[{run}]", f"out={tmp_path / 'report'}", cwd=tmp_path))
    html = (tmp_path / "report" / "report.html").read_text().replace("\\u002f", "/")  # plotly's JSON escapes "/"
    for chart in ("lmforge_python_mc/acc", "lmforge_python_mc/acc_norm", "lmforge_python_gen/exact_match"):
        assert f'"title":{{"text":"{chart}"}}' in html or f'"text":"{chart}","x"' in html, chart
    assert "acc_stderr" not in html


@pytest.mark.slow
def test_ddp_ranks_split_the_examples_and_log_the_single_process_result(corpus, tmp_path: Path):
    run = tmp_path / "run"
    ok(lmforge(*harness_training(corpus, tmp_path / "cache", 6), "trainer=ddp_cpu", f"hydra.run.dir={run}",
               "callbacks.harness.limit=6", cwd=tmp_path))
    logged = csv_metric(run, "harness/lmforge_python_mc/acc")
    assert len(logged) == 2  # steps 3 and 6, each once (rank 0 logs the gathered result)
    out = tmp_path / "eval"
    ok(cli("eval", f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}", "harness.tasks=[lmforge_python_mc]",
           "harness.limit=6", f"hydra.run.dir={out}", cwd=tmp_path))
    assert metrics(out)["harness/lmforge_python_mc/acc"] == pytest.approx(logged[-1], abs=1e-9)
    assert json.loads((out / "harness_results.json").read_text())["results"]["lmforge_python_mc"]["sample_len"] == 6
