"""Every `lmforge` line of README.md works as written, from a directory that is not the project: the
lines are read from the README's code blocks and run in order (a fast override appended where a line
would train for minutes; `<run>` and `<sweep>` become the newest run or sweep of that folder, as a
reader would copy them). Lines that need hardware this machine lacks (a GPU, a SLURM cluster) must stop
with the one-line error saying so."""

from __future__ import annotations

import gzip
import json
import re
import shlex
import shutil
from pathlib import Path

import pytest
import torch

from conftest import STDLIB, cli, lmforge, reviews
from web_pages import pages, write_warc

REPO = Path(__file__).resolve().parents[1]

# Appended to training lines so that each finishes in seconds (the line itself is run unchanged).
FAST = {
    "mnist_mlp": ["trainer.max_epochs=1", "trainer.limit_train_batches=4", "trainer.limit_val_batches=2",
                  "trainer.limit_test_batches=2", "data.download=false"],
    "finetune": ["trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=2",
                 "trainer.limit_test_batches=2", "data.max_length=32"],
    "image": ["trainer.max_epochs=1", "trainer.limit_train_batches=4", "trainer.limit_val_batches=2",
              "trainer.limit_test_batches=2"],
    "detection": ["trainer.max_epochs=1", "trainer.max_time=null", "trainer.limit_train_batches=2",
                  "trainer.limit_val_batches=1", "trainer.limit_test_batches=1", "data.generated_images=40",
                  "data.image_size=64"],
    "speech": ["trainer.max_steps=3", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1",
               "data.sampling_rate=8000", "data.max_seconds=1.0", "data.batch_size=8"],
    "text": ["trainer.max_steps=4", "trainer.max_time=null", "trainer.val_check_interval=2",
             "trainer.limit_val_batches=2", "data.val_windows=4", "model.block_size=64", "data.batch_size=4",
             "tokenizer.vocab_size=300", "checkpoint.every_n_steps=2"],
}


def readme_commands() -> list[str]:
    """The `lmforge ...` lines of the README's bash blocks, comments removed."""
    text = (REPO / "README.md").read_text()
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words and words[0] == "lmforge":
                lines.append(shlex.join(words))
    return lines


COMMANDS = readme_commands()
# The lines run in order in one worker: `<run>` is the run an earlier line made.
pytestmark = pytest.mark.xdist_group("readme")


def fast_overrides(words: list[str]) -> list[str]:
    if words[0] != "train" or "--help" in words or "--cfg" in words:
        return []
    experiment = next((w.split("=", 1)[1] for w in words if w.startswith("experiment=")), "pretrain_tiny")
    kind = "mnist_mlp" if experiment == "mnist_mlp" else "finetune" if experiment.startswith("finetune") else \
        "image" if experiment.startswith("image_") else "detection" if experiment == "coco_detect" else "text"
    if experiment in ("audio_classify", "speech_ctc"):
        kind = "speech"
    extra = list(FAST[kind])
    if kind == "text" and not any(w.startswith(("data.paths=", "+data.sources.")) for w in words):
        extra.append("data.paths=[corpus/]")  # the default corpus is the whole stdlib: minutes to pack
    if "callbacks=harness" in words:
        extra.append("callbacks.harness.limit=5")
    if any(w.startswith("hparams_search=") for w in words):
        extra.append("hydra.sweeper.n_trials=2")
    if experiment == "pretrain_gpt2_124m":
        extra += ["model.n_layer=2", "model.n_embd=64", "model.n_head=2", "data.num_workers=0",
                  "trainer.accumulate_grad_batches=1"]
    return extra


def newest(pattern: str, cwd: Path) -> str:
    """`logs/x/runs/<run>` -> the newest finished run there (the one a reader just made)."""
    prefix = pattern.split("<")[0]
    found = [p for p in (cwd / prefix).glob("*") if p.is_dir() and (p / "run.json").is_file() or
             (p / "sweep.json").is_file()]
    assert found, f"nothing in {prefix} yet for {pattern}"
    return prefix + max(found, key=lambda p: p.stat().st_mtime).name


@pytest.fixture(scope="module")
def reader_dir(tmp_path_factory, tiny_hf_lm: Path) -> Path:
    """A reader's working directory with the files the README's lines name."""
    cwd = tmp_path_factory.mktemp("reader")
    for package in ("json", "email"):
        shutil.copytree(STDLIB / package, cwd / "corpus" / package, ignore=shutil.ignore_patterns("__pycache__"))
    (cwd / "input.txt").write_text("".join((STDLIB / name).read_text() for name in ("abc.py", "base64.py")))
    (cwd / "books").mkdir()
    for name in ("this.py", "bisect.py"):
        (cwd / "books" / f"{name}.txt").write_text((STDLIB / name).read_text())
    with gzip.open(cwd / "web.jsonl.gz", "wt") as f:
        for name in ("heapq.py", "textwrap.py"):
            f.write(json.dumps({"text": (STDLIB / name).read_text()}) + "\n")
    write_warc(cwd / "crawl" / "pages.warc.gz", pages(), image=True)
    reviews(cwd / "reviews.csv", 80, 0)
    reviews(cwd / "reviews_test.csv", 20, 1)
    with open(cwd / "instructions.jsonl", "w") as f:
        for i in range(40):
            f.write(json.dumps({"prompt": f"Add {i} and 1.", "response": f"{i + 1}"}) + "\n")
    shutil.copytree(tiny_hf_lm, cwd / "path" / "to" / "hf-model-dir")
    return cwd


def test_the_readme_has_the_lines_it_promises():
    assert len(COMMANDS) >= 30
    for command in ("train", "eval", "generate", "tokenizer", "export", "report"):
        assert any(c.startswith(f"lmforge {command}") for c in COMMANDS), command


@pytest.mark.slow
@pytest.mark.parametrize("line", COMMANDS)
def test_every_readme_line_works_as_written(line: str, reader_dir: Path):
    words = shlex.split(line)[1:]
    words = [re.sub(r"[^\s=\[\]]*<(run|sweep)>", lambda m: newest(m.group(0), reader_dir), w) for w in words]
    if "-m" in words or any("ddp" in w for w in words):  # lines that start processes: as a reader runs them
        proc = lmforge(*words, *fast_overrides(words), cwd=reader_dir, env={"WANDB_MODE": "offline"})
    else:  # the rest in this process: the same code path without ~5 s of interpreter and imports each
        proc = cli(*words, *fast_overrides(words), cwd=reader_dir)
    needs_gpu = any(w in ("trainer=gpu", "trainer=ddp", "trainer=fsdp") for w in words)
    if ("launcher=slurm" in words or "executor=slurm" in words) and shutil.which("sbatch") is None:
        assert proc.returncode == 2 and "sbatch" in proc.stderr.strip().splitlines()[-1], proc.stderr[-2000:]
    elif needs_gpu and not torch.cuda.is_available():
        assert proc.returncode == 2 and "has no CUDA GPU" in proc.stderr, proc.stderr[-2000:]
    else:
        assert proc.returncode == 0, f"{line}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
        assert "Traceback" not in proc.stderr


def test_a_line_works_from_the_project_root_too():
    proc = lmforge("train", "experiment=mnist_mlp", "--cfg", "job", cwd=REPO)
    assert proc.returncode == 0 and "_target_: lmforge.models.mlp.MLP" in proc.stdout
