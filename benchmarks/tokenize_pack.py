"""Tokenize + pack: throughput (MB/s of text, tokens/s) and peak memory, old path vs new, side by side.

Paths, each run in a fresh subprocess into a fresh cache (so every run really tokenizes):
  old     the packer of commit BASELINE (`git show`, loaded as a module): documents held in memory,
          Hugging Face `encode_batch`, `Pool.imap`
  new     lmforge.data.packing today: streamed, tiktoken-encoded, bounded work in flight
  new-hf  the same, forced to encode with Hugging Face `tokenizers` (isolates the encoder's share)
Both read the corpus files inside the timed call. Configurations alternate (round-robin) over
`--repeats` rounds; medians are printed, with new/old ratios. Memory: a sampler in this process
sums the PSS of the run's whole process tree (main + pool workers; shared pages counted once)
every 50 ms, and each run reports its main process's ru_maxrss.

`--big GB` packs a generated JSONL corpus of that many GB of text, gzipped (repeated stdlib text,
~4 KB documents; generated once into the temp dir, or `--big-file` to reuse one), with the new
path on every core, and reports peak memory against a 1 GB bound; `--big-format txt`: the same text
as one plain-text file (one document, split by position, read in pieces). `--interrupt S` kills that run
with SIGKILL after S seconds and runs it again: the second run continues the interrupted build.

    python benchmarks/tokenize_pack.py                     # ~6 MB of stdlib text, 3 rounds
    python benchmarks/tokenize_pack.py --mb 0 --repeats 3  # the whole stdlib corpus
    python benchmarks/tokenize_pack.py --big 2             # 2 GB of JSONL text (.jsonl.gz)
    python benchmarks/tokenize_pack.py --big 2 --big-format txt   # one 2 GB plain-text file
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, median, spread, stdlib_subset  # noqa: E402

BASELINE = "3c5ad42"  # the last commit with the in-memory packer
LIMIT_MB = 1024


# ---- memory of a process tree
def _tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                stat = Path(f"/proc/{name}/stat").read_text()
            except OSError:
                continue
            children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(name))
    out, stack = [], [root]
    while stack:
        pid = stack.pop()
        out.append(pid)
        stack += children.get(pid, [])
    return out


def _pss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class TreeMemory(threading.Thread):
    """Samples the summed PSS of a process and its descendants; `peak` in MB."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self.done = pid, 0.0, threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.05):
            self.peak = max(self.peak, sum(_pss_mb(p) for p in _tree(self.pid)))


def run_child(args: list[str], kill_after: float | None = None) -> tuple[dict | None, float]:
    """Run this script as a child; return (its JSON result or None if killed, peak tree PSS MB)."""
    proc = subprocess.Popen([sys.executable, __file__, "--child", *args], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONWARNINGS": "ignore"})
    sampler = TreeMemory(proc.pid)
    sampler.start()
    try:
        out, _ = proc.communicate(timeout=kill_after)
    except subprocess.TimeoutExpired:
        for pid in reversed(_tree(proc.pid)):
            os.kill(pid, signal.SIGKILL)
        proc.communicate()
        out = None
    sampler.done.set()
    sampler.join()
    if out is None:
        return None, sampler.peak
    if proc.returncode:
        sys.exit(f"child failed ({proc.returncode}): {args}")
    return json.loads(out.strip().splitlines()[-1]), sampler.peak


# ---- the child: one timed pack
def child(argv: list[str]) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("path", choices=["old", "new", "new-hf"])
    p.add_argument("--corpus", required=True)
    p.add_argument("--tokenizer", required=True)
    p.add_argument("--cache", required=True)
    p.add_argument("--num-proc", type=int, default=None)
    p.add_argument("--old-module", default=None)
    a = p.parse_args(argv)
    from transformers import AutoTokenizer

    from lmforge.data.corpus import Corpus, iter_documents, resolve_sources

    tok = AutoTokenizer.from_pretrained(a.tokenizer)
    files = resolve_sources([a.corpus])
    encoder = "tokenizers"
    t0 = time.perf_counter()
    if a.path == "old":
        spec = importlib.util.spec_from_file_location("old_packing", a.old_module)
        old = importlib.util.module_from_spec(spec)
        sys.modules["old_packing"] = old  # pool workers find its functions by module name
        spec.loader.exec_module(old)
        out, built = old.pack_corpus(lambda: list(iter_documents(files)), tok, cache_dir=a.cache, corpus_fp="bench",
                                     num_proc=a.num_proc)
    else:
        from lmforge.data.packing import pack_corpus

        out, built = pack_corpus(Corpus(files), tok, cache_dir=a.cache, num_proc=a.num_proc, fast=a.path == "new")
    seconds = time.perf_counter() - t0
    meta = json.loads((Path(out) / "meta.json").read_text())
    encoder = meta.get("encoder") or encoder
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "tokens": meta["train_tokens"] + meta["val_tokens"], "built": built,
                      "text_bytes": meta["train_bytes"] + meta["val_bytes"], "encoder": encoder,
                      "main_rss_mb": rss, "worker_rss_mb": workers}))


# ---- the parent
def old_module(tmp: Path) -> Path | None:
    try:
        source = subprocess.run(["git", "-C", str(REPO), "show", f"{BASELINE}:src/lmforge/data/packing.py"],
                                capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    path = tmp / "old_packing.py"
    path.write_text(source)
    return path


def train_tokenizers(corpus_dir: Path, tmp: Path, vocab: int) -> dict[str, Path]:
    from lmforge.data.corpus import Corpus, resolve_sources
    from lmforge.tokenizers import BPE, Bytes

    corpus = Corpus(resolve_sources([str(corpus_dir)]))
    t0 = time.perf_counter()
    _, bpe = BPE(vocab, path=str(tmp / "bpe")).load_or_train(tmp, corpus.train_texts, corpus.fingerprint)
    print(f"BPE {vocab} trained in {time.perf_counter() - t0:.1f} s", flush=True)
    _, raw = Bytes(path=str(tmp / "bytes")).load_or_train(tmp, corpus.train_texts, "")
    return {f"bpe{vocab}": bpe, "bytes": raw}


def compare(args, tmp: Path) -> None:
    corpus = tmp / "corpus"
    n, nbytes = stdlib_subset(corpus, max_bytes=int(args.mb * 1e6) if args.mb else None)
    print(f"corpus: {n} stdlib files, {nbytes / 1e6:.2f} MB", flush=True)
    tokenizers = train_tokenizers(corpus, tmp, args.vocab)
    old = old_module(tmp)
    paths = ["old", "new", "new-hf"] if old else ["new", "new-hf"]
    if not old:
        print(f"  note: no git history here ({BASELINE}): the old path is left out")
    procs = [int(x) for x in args.num_proc.split(",")]
    results: dict[tuple, list[tuple[dict, float]]] = {}
    run = 0
    for r in range(args.repeats):
        for name, tok_dir in tokenizers.items():
            for num_proc in procs:
                for path in paths:
                    run += 1
                    cache = tmp / f"cache{run}"
                    res, peak = run_child([path, "--corpus", str(corpus), "--tokenizer", str(tok_dir), "--cache",
                                           str(cache), "--num-proc", str(num_proc), "--old-module", str(old)])
                    assert res["built"], "expected a cache miss"
                    results.setdefault((name, num_proc, path), []).append((res, peak))
                    print(f"[{r + 1}/{args.repeats}] {name:8s} num_proc={num_proc} {path:6s} ({res['encoder']}): "
                          f"{res['seconds']:6.2f} s  {res['text_bytes'] / 1e6 / res['seconds']:6.2f} MB/s  "
                          f"{res['tokens'] / res['seconds'] / 1e6:6.3f} M tokens/s  peak PSS {peak:5.0f} MB",
                          flush=True)
                    shutil.rmtree(cache, ignore_errors=True)
    print(f"\nload average after: {os.getloadavg()}\n")
    print(f"{'tokenizer':10s} {'procs':>5s} {'path':7s} {'MB/s':>7s} {'M tok/s':>8s} {'peak PSS MB':>11s}  "
          f"{'vs old':>7s}  seconds")
    for (name, num_proc, path), rs in results.items():
        secs = [res["seconds"] for res, _ in rs]
        res = rs[0][0]
        base = results.get((name, num_proc, "old"))
        ratio = median([x["seconds"] for x, _ in base]) / median(secs) if base else float("nan")
        print(f"{name:10s} {num_proc:5d} {path:7s} {res['text_bytes'] / 1e6 / median(secs):7.2f} "
              f"{res['tokens'] / median(secs) / 1e6:8.3f} {median([pk for _, pk in rs]):11.0f}  x{ratio:6.2f}  "
              f"{spread(secs)}")


def generate_big(path: Path, gb: float) -> tuple[int, int]:
    """Repeated stdlib text as ~4 KB JSONL documents, gzipped (`.jsonl.gz`), or the same text as one
    plain-text file (`.txt`); returns (text bytes, documents)."""
    from lmforge.data.corpus import stdlib_files

    chunks = []
    for f in stdlib_files():
        text = f.read_text(encoding="utf-8", errors="replace")
        chunks += [text[i : i + 4096] for i in range(0, len(text), 4096)]
    target, written, docs = int(gb * 1e9), 0, 0
    plain = path.suffix == ".txt"
    with (open(path, "w", encoding="utf-8") if plain else gzip.open(path, "wt", encoding="utf-8", compresslevel=1)) as out:
        while written < target:
            for chunk in chunks:
                out.write(chunk if plain else json.dumps({"text": chunk, "id": docs}) + "\n")
                written += len(chunk.encode())
                docs += 1
                if written >= target:
                    break
    return written, 1 if plain else docs


def big(args, tmp: Path) -> None:
    corpus_dir = tmp / "corpus"
    stdlib_subset(corpus_dir, max_bytes=6_000_000)
    tokenizer = train_tokenizers(corpus_dir, tmp, args.vocab)[f"bpe{args.vocab}"]
    data = Path(args.big_file) if args.big_file else tmp / f"big.{args.big_format}"
    if not data.exists():
        t0 = time.perf_counter()
        text, docs = generate_big(data, args.big)
        print(f"generated {data}: {text / 1e9:.2f} GB of text in {docs:,} documents, "
              f"{data.stat().st_size / 1e9:.2f} GB on disk, in {time.perf_counter() - t0:.0f} s", flush=True)
    cache = tmp / "cache-big"
    child_args = ["new", "--corpus", str(data), "--tokenizer", str(tokenizer), "--cache", str(cache)]
    saved = {"parts": 0, "train_bytes": 0, "val_bytes": 0, "train_tokens": 0, "val_tokens": 0}
    if args.interrupt:
        _, peak = run_child(child_args, kill_after=args.interrupt)
        partial = list((cache / "corpus").glob(".*.partial/progress.json"))
        saved.update(json.loads(partial[0].read_text()) if partial else {})
        print(f"killed (SIGKILL) after {args.interrupt:.0f} s: peak PSS {peak:.0f} MB, "
              f"{saved['parts']:,} texts saved as done", flush=True)
    res, peak = run_child(child_args)
    text = res["text_bytes"] - saved["train_bytes"] - saved["val_bytes"]
    tokens = res["tokens"] - saved["train_tokens"] - saved["val_tokens"]
    print(f"packed {res['text_bytes'] / 1e9:.2f} GB of text ({res['tokens']:,} tokens, {res['encoder']}, "
          f"{os.cpu_count()} CPUs){' continuing the killed run' if args.interrupt else ''}: "
          f"{text / 1e9:.2f} GB in {res['seconds']:.0f} s, {text / 1e6 / res['seconds']:.1f} MB/s, "
          f"{tokens / res['seconds'] / 1e6:.2f} M tokens/s")
    print(f"peak memory: {peak:.0f} MB PSS over the process tree (main process max RSS {res['main_rss_mb']:.0f} MB, "
          f"largest worker {res['worker_rss_mb']:.0f} MB): {'under' if peak < LIMIT_MB else 'OVER'} {LIMIT_MB} MB")
    print(f"load average after: {os.getloadavg()}")


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        return child(sys.argv[2:])
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mb", type=float, default=6.0, help="MB of stdlib text (0: all of it; default 6)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--vocab", type=int, default=4096, help="BPE vocabulary size (default 4096)")
    p.add_argument("--num-proc", default=str(os.cpu_count()), help="comma-separated num_proc values (default: all)")
    p.add_argument("--big", type=float, default=None, help="GB of generated JSONL text to pack (e.g. 2)")
    p.add_argument("--big-format", choices=["jsonl.gz", "txt"], default="jsonl.gz",
                   help="--big: JSONL documents, gzipped (default), or one plain-text file")
    p.add_argument("--big-file", default=None, help="reuse this generated file (kept; see --keep)")
    p.add_argument("--interrupt", type=float, default=None, help="--big: SIGKILL after this many s, then continue")
    p.add_argument("--keep", action="store_true", help="keep the temp dir")
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="lmforge-bench-tok-"))
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()}, temp dir {tmp}", flush=True)
    try:
        big(args, tmp) if args.big else compare(args, tmp)
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
