"""`lmforge tokenizer` as a library call: build the corpus's tokenizer, save it, report its rate."""

from __future__ import annotations

import shutil
from pathlib import Path

from omegaconf import DictConfig

from lmforge.config.validate import validate


def train_tokenizer(cfg: DictConfig) -> Path:
    """Train or reuse the tokenizer of `data` + `tokenizer`; copy it into the run directory too."""
    config = validate(cfg, "tokenizer")

    from hydra.utils import instantiate

    from lmforge.atomic import write_json

    run_dir = Path(config["paths"]["output_dir"])
    datamodule = instantiate(config["data"], _convert_="all")
    datamodule.prepare_tokenizer()
    tokenizer, source = datamodule.tokenizer, Path(datamodule.tokenizer_dir)
    sample = "\n".join(datamodule.documents()[:200])
    bytes_per_token = len(sample.encode()) / max(1, len(tokenizer(sample)["input_ids"]))
    target = run_dir / "tokenizer"
    shutil.copytree(source, target, dirs_exist_ok=True)
    summary = {"tokenizer_dir": str(source), "vocab_size": len(tokenizer), "kind": config["tokenizer"]["kind"],
               "bytes_per_token": round(bytes_per_token, 3)}
    write_json(run_dir / "metrics.json", summary)
    print(f"tokenizer: {len(tokenizer)} tokens, {bytes_per_token:.2f} bytes/token on the first documents")
    print(f"saved: {source}  (copy: {target})")
    print(f"use it: lmforge train tokenizer=pretrained tokenizer.path={source}")
    return source
