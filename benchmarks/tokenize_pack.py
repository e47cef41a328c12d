"""Tokenize-and-pack throughput of lmforge's corpus cache: MB/s of raw text and tokens/s.

The corpus is the first stdlib `.py` files (lmforge's default corpus) up to `--mb` megabytes, read
into memory once. For each tokenizer (a byte-level BPE of `--vocab` tokens freshly trained on that
text, and the byte tokenizer) and each `num_proc` (1 and 2), `lmforge.data.packing.pack_corpus`
writes train.bin/val.bin into a FRESH cache dir, so every timed run really tokenizes (checked:
`built` is True); runs alternate over the configurations, `--repeats` rounds, medians printed.
Timed: the whole `pack_corpus` call (encode, eos-join, uint16 arrays, file writes, meta.json) for
documents already in memory; reading the files and training the BPE are timed separately.

Note: packing.py tokenizes in-process when num_proc <= 1 OR the text is under MIN_PARALLEL_BYTES
(4 MB), so `--mb` must exceed 4 for num_proc=2 to start worker processes. In-process, the Rust
`encode_batch` may itself use several threads (TOKENIZERS_PARALLELISM unset); pool workers run
single-threaded, one per process.

    python benchmarks/tokenize_pack.py                 # ~6 MB of stdlib text, 2 repeats
    python benchmarks/tokenize_pack.py --mb 0 --repeats 3     # the whole stdlib corpus
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, median, spread  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mb", type=float, default=6.0, help="MB of stdlib text (0: all of it; default 6)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--vocab", type=int, default=4096, help="BPE vocabulary size (default 4096)")
    p.add_argument("--num-proc", default="1,2", help="comma-separated num_proc values (default 1,2)")
    args = p.parse_args()
    procs = [int(x) for x in args.num_proc.split(",")]

    from lmforge.data.corpus import corpus_fingerprint, iter_documents, stdlib_files
    from lmforge.data.packing import MIN_PARALLEL_BYTES, pack_corpus, split_documents
    from lmforge.tokenizers import byte_tokenizer, train_bpe

    t0 = time.perf_counter()
    files, total = [], 0
    for f in stdlib_files():
        if args.mb and total >= args.mb * 1e6:
            break
        files.append(f)
        total += f.stat().st_size
    docs = list(iter_documents(files))
    nbytes = sum(len(d.encode()) for d in docs)
    t_read = time.perf_counter() - t0
    fp = corpus_fingerprint(files, bench=True)
    print(f"machine: {machine()}")
    print(f"corpus: {len(docs)} stdlib files, {nbytes / 1e6:.2f} MB, read in {t_read:.2f} s", flush=True)
    if nbytes < MIN_PARALLEL_BYTES and any(n > 1 for n in procs):
        print(f"  note: under {MIN_PARALLEL_BYTES >> 20} MB, num_proc>1 tokenizes in-process like num_proc=1")

    tmp = Path(tempfile.mkdtemp(prefix="lmforge-bench-tok-"))
    try:
        train_docs = [d for d, v in zip(docs, split_documents(len(docs), 0.05)) if not v]
        t0 = time.perf_counter()
        bpe = train_bpe(train_docs, args.vocab, tmp / "bpe")
        t_bpe = time.perf_counter() - t0
        print(f"BPE {args.vocab} trained on {sum(len(d.encode()) for d in train_docs) / 1e6:.2f} MB in {t_bpe:.1f} s",
              flush=True)
        tokenizers = {f"bpe{args.vocab}": bpe, "bytes": byte_tokenizer(tmp / "bytes")}

        results: dict[tuple[str, int], list[tuple[float, int]]] = {}
        run = 0
        for r in range(args.repeats):
            for name, tok in tokenizers.items():
                for n in procs:
                    run += 1
                    cache = tmp / f"cache{run}"  # fresh: a cache miss, so it tokenizes
                    t0 = time.perf_counter()
                    out, built = pack_corpus(lambda: docs, tok, cache_dir=cache, corpus_fp=fp, num_proc=n)
                    dt = time.perf_counter() - t0
                    assert built, "expected a cache miss"  # the setup, not a timing
                    import json

                    meta = json.loads((out / "meta.json").read_text())
                    ntok = meta["train_tokens"] + meta["val_tokens"]
                    results.setdefault((name, n), []).append((dt, ntok))
                    print(f"[{r + 1}/{args.repeats}] {name:8s} num_proc={n}: {dt:6.2f} s  "
                          f"{nbytes / 1e6 / dt:6.2f} MB/s  {ntok / dt / 1e6:6.3f} M tokens/s  ({ntok:,} tokens)",
                          flush=True)
                    shutil.rmtree(cache, ignore_errors=True)

        print()
        print(f"{'tokenizer':10s} {'num_proc':>8s} {'MB/s (median)':>14s} {'M tokens/s':>11s} {'bytes/token':>12s}  runs (s)")
        for (name, n), rs in results.items():
            dts = [dt for dt, _ in rs]
            ntok = rs[0][1]
            print(f"{name:10s} {n:8d} {nbytes / 1e6 / median(dts):14.2f} {ntok / median(dts) / 1e6:11.3f} "
                  f"{nbytes / ntok:12.2f}  {spread(dts)}")
        for name in tokenizers:
            if len(procs) > 1:
                base = median([dt for dt, _ in results[(name, procs[0])]])
                for n in procs[1:]:
                    print(f"{name}: num_proc={n} vs {procs[0]}: speed-up x{base / median([dt for dt, _ in results[(name, n)]]):.2f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
