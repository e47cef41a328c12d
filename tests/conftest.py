"""Shared helpers: run the real CLI in a subprocess, read a run directory; session fixtures built once."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sysconfig
from pathlib import Path

import pytest

import warm

# Each xdist worker (and every process it starts) gets its share of the cores: two workers with two
# torch threads each on two cores spend their time switching, not computing (a step in-suite took up
# to 15x its time alone). pytest's own process comes first (under xdist: the controller, whose
# environment the workers inherit) and notes whether the user chose a thread count; if not, each
# process sets its share.
os.environ.setdefault("LMFORGE_TESTS_USER_THREADS", os.environ.get("OMP_NUM_THREADS", ""))
if not os.environ["LMFORGE_TESTS_USER_THREADS"]:
    _WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // _WORKERS))

STDLIB = Path(sysconfig.get_paths()["stdlib"])
OFFLINE_ENV = {
    "WANDB_MODE": "offline",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "PYTHONWARNINGS": "ignore",
}


def lmforge(*args: str, cwd: Path, env: dict | None = None, timeout: int = 900,
            fresh: bool = False) -> subprocess.CompletedProcess:
    """`python -m lmforge ARGS` in `cwd` as its own process (forked warm, see warm.py; `fresh=True`: a new
    interpreter); returns the finished process (text stdout/stderr)."""
    proc = start(list(args), cwd, env, fresh=fresh)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    return subprocess.CompletedProcess(["lmforge", *args], proc.returncode, out, err)


def start(args: list[str], cwd: Path, env: dict | None = None, **options):
    """`python -m lmforge ARGS` started in `cwd` (the environment: this one, offline, plus `env`); a
    Popen-like handle. Options: stdout/stderr (default PIPE), new_session, fresh (see warm.start)."""
    full_env = {**os.environ, **OFFLINE_ENV, **(env or {})}
    full_env.pop("HYDRA_FULL_ERROR", None)
    return warm.start(args, cwd, full_env, **options)


def ctrl_c_at_its_default() -> None:
    """`preexec_fn` of a child a test sends SIGINT: Ctrl-C at its default, as for a command typed in a
    terminal (a shell starts background jobs with SIGINT ignored, and a child inherits that)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def is_stopped(pid: int) -> bool:
    """Whether every thread of process `pid` is stopped (state T in /proc; a thread that ended meanwhile too)."""
    states = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            states.append((task / "stat").read_text().rsplit(")", 1)[1].split()[0])
        except OSError:
            pass
    return all(state in "Tt" for state in states)


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """`lmforge ARGS` run in this process (no interpreter start-up: for config and bad-input cases
    where the process boundary is not the point); the same result type as `lmforge()`."""
    import contextlib
    import io

    from lmforge.cli import main

    out, err = io.StringIO(), io.StringIO()
    previous, previous_env = Path.cwd(), dict(os.environ)
    os.chdir(cwd)
    os.environ.update({k: v for k, v in OFFLINE_ENV.items() if k != "PYTHONWARNINGS"})
    os.environ.pop("HYDRA_FULL_ERROR", None)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            main(list(args))
    except SystemExit as exc:
        status = exc.code if isinstance(exc.code, int) else 1
    finally:
        os.chdir(previous)
        os.environ.clear()
        os.environ.update(previous_env)
    return subprocess.CompletedProcess(["lmforge", *args], status, out.getvalue(), err.getvalue())


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    """Assert a CLI run succeeded, showing its output when it did not."""
    assert proc.returncode == 0, f"exit {proc.returncode}\nSTDOUT:\n{proc.stdout[-4000:]}\nSTDERR:\n{proc.stderr[-6000:]}"
    return proc


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    """Assert exit status 2 with a single `error: ...` line and no traceback; return that line."""
    assert proc.returncode == 2, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    return errors[0]


def metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def csv_metric(run_dir: Path, name: str) -> list[float]:
    """Every logged value of `name` in the run's csv/metrics.csv, in order."""
    with open(run_dir / "csv" / "metrics.csv") as f:
        return [float(row[name]) for row in csv.DictReader(f) if row.get(name)]


def built_once(tmp_path_factory, name: str, build) -> Path:
    """A folder that `build(folder)` fills once for the whole test session: the first xdist worker to
    ask builds it under a file lock, the others wait; each worker then gets its own copy, so a test
    that locks or writes into it never meets another worker's test there."""
    from filelock import FileLock

    own = tmp_path_factory.mktemp(name)
    if "PYTEST_XDIST_WORKER" not in os.environ:
        build(own)
        return own
    shared = tmp_path_factory.getbasetemp().parent / "built-once" / name
    shared.parent.mkdir(exist_ok=True)
    with FileLock(f"{shared}.lock"):
        if not (shared / ".built").is_file():
            shutil.rmtree(shared, ignore_errors=True)
            shared.mkdir()
            build(shared)
            (shared / ".built").touch()
    shutil.copytree(shared, own, symlinks=True, dirs_exist_ok=True)
    return own


@pytest.fixture(scope="session")
def mlp_run(tmp_path_factory) -> Path:
    """The textbook experiment, 10 epochs on the bundled digits (MNIST download impossible offline)."""
    def build(root: Path) -> None:
        ok(lmforge("train", "experiment=mnist_mlp", f"hydra.run.dir={root / 'run'}", "data.download=false",
                   cwd=root))

    return built_once(tmp_path_factory, "mlp", build) / "run"


def small_corpus(folder: Path) -> Path:
    """~250 KB of real Python source: the json and email packages of this interpreter."""
    for package in ("json", "email"):
        shutil.copytree(STDLIB / package, folder / package, ignore=shutil.ignore_patterns("__pycache__"))
    return folder


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> Path:
    return small_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="session")
def pretrain_run(tmp_path_factory) -> tuple[Path, str]:
    """A short pretraining run on ~250 KB of real Python source (the run and what it printed)."""
    def build(root: Path) -> None:
        corpus = small_corpus(root / "corpus")
        proc = ok(lmforge("train", f"data.paths=[{corpus}]", "tokenizer.vocab_size=512", "trainer.max_steps=80",
                          "trainer.max_time=null",  # 80 steps however busy the machine
                          "data.batch_size=8", "model.block_size=128", "model.n_layer=2", "data.val_windows=16",
                          "trainer.val_check_interval=20", "callbacks.text_samples.every_n_steps=40",
                          f"paths.cache_dir={root / 'cache'}", f"hydra.run.dir={root / 'run'}",
                          "print_config=false", cwd=root))
        (root / "stdout.txt").write_text(proc.stdout)

    root = built_once(tmp_path_factory, "pretrain", build)
    return root / "run", (root / "stdout.txt").read_text()


GOOD = ["good", "great", "fine", "lovely", "superb", "nice"]
BAD = ["bad", "awful", "poor", "terrible", "dull", "ugly"]
FILLER = ["the", "movie", "plot", "was", "really", "quite", "and", "acting", "story", "overall"]


def reviews(path: Path, n: int, seed: int, header=("review", "sentiment")) -> Path:
    """A CSV whose label is learnable from the words: positive words -> pos, negative -> neg."""
    import random

    rng = random.Random(seed)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for i in range(n):
            label = "pos" if i % 2 == 0 else "neg"
            words = rng.sample(FILLER, 5) + rng.sample(GOOD if label == "pos" else BAD, 2)
            rng.shuffle(words)
            writer.writerow([" ".join(words), label])
    return path


@pytest.fixture(scope="session")
def review_files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("reviews")
    return {"train": reviews(root / "train.csv", 160, 0), "val": reviews(root / "val.csv", 40, 1),
            "test": reviews(root / "test.csv", 40, 2)}


def byte_bpe():
    """A byte-level BPE with no merges: 256 byte tokens + eos + pad (258 ids), as a transformers tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(["a"], trainers.BpeTrainer(
        vocab_size=258, special_tokens=["<|endoftext|>", "<|pad|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                   pad_token="<|pad|>", clean_up_tokenization_spaces=False)


@pytest.fixture(scope="session")
def tiny_hf_lm(tmp_path_factory) -> Path:
    """A tiny random GPT-2 with a byte-level tokenizer (256 bytes + eos + pad), as a Hugging Face directory."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from lmforge.models.export import export_hf

    tokenizer = byte_bpe()
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=258, n_positions=64, n_layer=2, n_head=2, n_embd=64,
                                       bos_token_id=None, eos_token_id=None))
    return export_hf(model, tokenizer, tmp_path_factory.mktemp("lm") / "tiny-gpt2")


def pytest_collection_modifyitems(items) -> None:
    """Tests marked slow first (their order kept): `make test` hands tests to workers as they free up
    (`--dist loadgroup`), and a slow test drawn last would set the wall time alone."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.hookimpl(trylast=True)
def pytest_collection_finish(session) -> None:
    """Under `--dist loadgroup` the tests of one xdist_group must reach one worker (the README's lines
    run in order; module-scoped runs are shared): stop at once if this pytest/pytest-xdist pair lost them."""
    if session.config.getoption("dist", "no") != "loadgroup" or "PYTEST_XDIST_WORKER" not in os.environ:
        return
    lost = [item.nodeid for item in session.items if item.get_closest_marker("xdist_group") and "@" not in item.nodeid]
    if lost:
        raise pytest.UsageError(f"--dist loadgroup ignored the xdist_group of {lost[0]} (and {len(lost) - 1} more): "
                                "this pytest-xdist cannot group tests under this pytest; see pyproject.toml")


def pytest_sessionfinish(session) -> None:
    warm.stop_server()
