"""`lmforge prepare` throughput and memory: MB of WARC per second (per worker) through the web preset
(trafilatura extraction, language and quality filters, exact and MinHash dedup) with 1 and 2 worker
processes, and the peak memory of a one-process prepare whose MinHash stages see 1x and 2x the corpus.
`--big-mb N --cap-mb M`: instead, a one-process MinHash prepare (prepare=jsonl) of N MB of JSONL text
inside a memory cgroup capped at M MB (N > M: a corpus bigger than the memory it may use; the kernel
kills the process if it needs more; root and cgroup v1's memory controller).

    python benchmarks/prepare.py            # --mb 4: two gzipped WARC files of ~2 MB each
    python benchmarks/prepare.py --big-mb 1000 --cap-mb 400
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

from _common import bench_env, lmforge_cmd


def english_words() -> list[str]:
    """Real English words: those of a few stdlib modules' docstrings and comments."""
    root = Path(sysconfig.get_paths()["stdlib"])
    text = " ".join((root / name).read_text() for name in ("argparse.py", "subprocess.py", "typing.py", "inspect.py"))
    words = sorted({w for w in re.findall(r"\b[a-z]{3,12}\b", text)})
    return words


STOP = ["the", "and", "of", "to", "that", "with", "have", "this", "for", "from", "when", "which"]


def page(rng: random.Random, words: list[str], i: int) -> str:
    paragraphs = []
    for _ in range(rng.randint(4, 9)):
        sentences = []
        for _ in range(rng.randint(3, 7)):
            body = [rng.choice(STOP) if rng.random() < 0.3 else rng.choice(words) for _ in range(rng.randint(8, 20))]
            sentences.append(" ".join(body).capitalize() + ".")
        paragraphs.append(" ".join(sentences))
    body = "".join(f"<p>{p}</p>" for p in paragraphs)
    return (f"<!DOCTYPE html><html><head><title>Page {i}</title><script>var x = {i};</script></head><body>"
            f"<nav><a href='/'>Home</a> <a href='/about'>About</a></nav><main><article><h1>Page {i}</h1>{body}"
            f"</article></main><footer>Copyright {i}</footer></body></html>")


def write_warcs(folder: Path, mb: float, files: int, seed: int) -> float:
    """`files` gzipped WARCs of ~`mb` MB in all (about 1 page in 20 an exact copy, 1 in 20 a near copy);
    returns their size in MB."""
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    rng, words = random.Random(seed), english_words()
    folder.mkdir(parents=True, exist_ok=True)
    per_file = mb * 1e6 / files
    n, earlier = 0, []
    for k in range(files):
        path = folder / f"crawl-{k}.warc.gz"
        with open(path, "wb") as f:
            writer = WARCWriter(f, gzip=True)
            while f.tell() < per_file:
                roll = rng.random()
                html = (rng.choice(earlier) if roll < 0.05 and earlier else
                        rng.choice(earlier).replace(" the ", " a ", 3) if roll < 0.1 and earlier else page(rng, words, n))
                earlier = (earlier + [html])[-200:]
                headers = StatusAndHeaders("200 OK", [("Content-Type", "text/html; charset=utf-8")], protocol="HTTP/1.1")
                writer.write_record(writer.create_warc_record(f"http://site{n % 97}.example.org/{n}", "response",
                                                              payload=io.BytesIO(html.encode()), http_headers=headers))
                n += 1
    return sum(p.stat().st_size for p in folder.glob("*.warc.gz")) / 1e6


def write_jsonl(path: Path, mb: float, seed: int) -> float:
    """Plain-text documents (the generated pages' paragraphs) as JSONL, ~`mb` MB, 1 in 20 a near copy of an
    earlier one; returns the file's size in MB."""
    rng, words, earlier = random.Random(seed), english_words(), []
    with open(path, "w") as f:
        i = 0
        while f.tell() < mb * 1e6:
            text = re.sub(r"<[^>]+>", "\n", page(rng, words, i)).strip()
            if rng.random() < 0.05 and earlier:
                text = rng.choice(earlier).replace(" the ", " a ", 3)
            earlier = (earlier + [text])[-200:]
            f.write(json.dumps({"text": text, "id": str(i)}) + "\n")
            i += 1
    return path.stat().st_size / 1e6


# The capped run measures MinHash's memory: the other steps off (the filters would take most of the time).
MINHASH_ONLY = ("prepare.exact_dedup=null", "prepare.gopher_repetition=null", "prepare.gopher_quality=null",
                "prepare.fineweb_quality=null", "prepare.c4_quality=null")


@contextlib.contextmanager
def capped(mb: int):
    """A `preexec_fn` that moves the child into a new memory cgroup limited to `mb` MB (swap included);
    the cgroup is removed when the child has ended (no-op for `mb` 0)."""
    if not mb:
        yield None
        return
    group = Path(f"/sys/fs/cgroup/memory/lmforge-bench-{os.getpid()}")
    group.mkdir(exist_ok=True)
    try:
        (group / "memory.limit_in_bytes").write_text(str(mb << 20))
        if (group / "memory.memsw.limit_in_bytes").exists():
            (group / "memory.memsw.limit_in_bytes").write_text(str(mb << 20))
        yield lambda: (group / "cgroup.procs").write_text(str(os.getpid()))
    finally:
        group.rmdir()  # empty once its processes have ended


PEAK = ("import resource, subprocess, sys; code = subprocess.run(sys.argv[1:]).returncode; "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); sys.exit(code)")


def prepare(inputs: Path, out: Path, *overrides: str, cap_mb: int = 0) -> tuple[float, float, dict, dict]:
    """(wall seconds, peak resident MB of its largest process, stats.json, seconds spent in each stage's
    steps over its tasks) of one prepare, started fresh (in a memory cgroup of `cap_mb` MB if given)."""
    cmd = [sys.executable, "-c", PEAK, *lmforge_cmd(), "prepare", f"inputs=[{inputs}]", f"output_dir={out}", *overrides]
    t0 = time.perf_counter()
    with capped(cap_mb) as enter_cgroup:
        proc = subprocess.run(cmd, env=bench_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              preexec_fn=enter_cgroup)
    wall = time.perf_counter() - t0
    if proc.returncode:
        sys.exit(f"prepare failed ({proc.returncode}):\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    peak = int(proc.stderr.strip().splitlines()[-1]) / 1024
    busy = {}
    for stage in sorted((out / ".prepare" / "logs").iterdir()):
        busy[stage.name] = sum(step["time_stats"].get("total", 0) if isinstance(step["time_stats"], dict) else 0
                               for task in (stage / "stats").glob("*.json") for step in json.loads(task.read_text()))
    return wall, peak, json.loads((out / "stats.json").read_text()), busy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=float, default=4, help="MB of gzipped WARC (two files)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", action="store_true", help="keep the temp dir")
    parser.add_argument("--big-mb", type=float, default=0, help="MB of JSONL for the capped MinHash run")
    parser.add_argument("--cap-mb", type=int, default=400, help="the memory cgroup's limit for --big-mb")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="lmforge-bench-prepare-"))
    try:
        if args.big_mb:
            (tmp / "big").mkdir()
            size = write_jsonl(tmp / "big" / "docs.jsonl", args.big_mb, args.seed)
            wall, peak, stats, busy = prepare(tmp / "big", tmp / "out-big", "prepare=jsonl", *MINHASH_ONLY,
                                              cap_mb=args.cap_mb)
            print(f"one process, MinHash dedup, {size:.0f} MB of JSONL text in a {args.cap_mb} MB memory cgroup: "
                  f"peak resident {peak:.0f} MB, {wall:.0f} s ({size / wall:.2f} MB/s), documents "
                  f"{stats['documents_in']} -> {stats['documents_out']}")
            print("  seconds in each stage's steps: "
                  + ", ".join(f"{k} {v:.1f}" for k, v in sorted(busy.items(), key=lambda kv: -kv[1]) if v >= 0.05))
            return
        size = write_warcs(tmp / "crawl", args.mb, 2, args.seed)
        print(f"corpus: {size:.1f} MB of gzipped WARC in 2 files")
        rates = {}
        for workers in (1, 2):
            wall, _, stats, busy = prepare(tmp / "crawl", tmp / f"out-w{workers}", "executor.tasks=2",
                                           f"executor.workers={workers}")
            rates[workers] = size / wall
            print(f"workers={workers}: {wall:.1f} s, {size / wall:.3f} MB/s ({size / wall / workers:.3f} MB/s per "
                  f"worker); documents {stats['documents_in']} -> {stats['documents_out']}")
            print("  seconds in each stage's steps (all tasks): "
                  + ", ".join(f"{k} {v:.1f}" for k, v in sorted(busy.items(), key=lambda kv: -kv[1]) if v >= 0.05))
        print(f"2 workers / 1 worker: {rates[2] / rates[1]:.2f}x")
        # MinHash memory: one process (tasks=1) runs every stage; its peak with the corpus and with it twice.
        shutil.copytree(tmp / "crawl", tmp / "crawl2")
        for path in (tmp / "crawl").glob("*.warc.gz"):
            shutil.copy(path, tmp / "crawl2" / f"again-{path.name}")
        for name in ("crawl", "crawl2"):
            wall, peak, stats, _ = prepare(tmp / name, tmp / f"mem-{name}", "prepare.exact_dedup=null")
            print(f"one process, MinHash dedup, {name}: peak resident {peak:.0f} MB, {stats['documents_in']} "
                  f"documents, {wall:.1f} s")
    finally:
        if args.keep:
            print(f"kept: {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
