"""`lmforge tokenizer data.paths=[...]`: train (or reuse) the tokenizer of a corpus and save it."""

from __future__ import annotations

import itertools

from omegaconf import DictConfig

from lmforge.config.validate import validate
from lmforge.job import output_dir


def main(cfg: DictConfig) -> None:
    # 1. Validate.
    config = validate(cfg, "tokenizer")

    from hydra.utils import instantiate

    from lmforge.runs.directory import RunDir
    from lmforge.runs.lock import RunLock
    from lmforge.runs.metadata import run_info

    # 2. Claim the run directory (no live run's), build the corpus's tokenizer (trained on its train
    # documents, or reused from the cache).
    run = RunDir(output_dir())
    lock = RunLock(run.path).acquire()  # held until this process exits
    run.refuse_unless(resume=False, overwrite=config["overwrite"], resumable=False)
    lock.record_holder()
    info = run_info("tokenizer", run.path)  # written at the end: bad input leaves no run directory
    datamodule = instantiate(config["data"], _convert_="all")
    datamodule.prepare_tokenizer()
    tokenizer, source = datamodule.tokenizer, datamodule.tokenizer_dir

    # 3. Measure it on the first documents, 4. write a copy, its figures (metrics.json: numbers only)
    # and where it was saved (run.json) into the run directory.
    sample = "\n".join(itertools.islice(datamodule.corpus.documents(max_chars=1 << 20), 200))
    bytes_per_token = len(sample.encode()) / max(1, len(tokenizer(sample)["input_ids"]))
    run.save_tokenizer(tokenizer)
    run.write_metrics({"vocab_size": len(tokenizer), "bytes_per_token": round(bytes_per_token, 3)})
    run.write_info({**info, "tokenizer_dir": str(source)})
    run.finish("finished")
    print(f"tokenizer: {len(tokenizer)} tokens, {bytes_per_token:.2f} bytes/token on the first documents")
    print(f"saved: {source}  (copy: {run.tokenizer_dir})")
    print(f"use it: lmforge train tokenizer=pretrained tokenizer.path={source}")
