"""`lmforge generate ckpt_path=... prompt=...`: stream samples from a run, a .ckpt or an exported model."""

from __future__ import annotations

import sys

from omegaconf import DictConfig

from lmforge.config.validate import validate


def main(cfg: DictConfig) -> None:
    # 1. Validate (sampling settings are range-checked by the schema).
    config = validate(cfg, "generate")

    from lmforge.experiment.load import load_model
    from lmforge.generation import generate, new_tokens_cap

    # 2. Build: the model and its tokenizer only (no data).
    model, tokenizer, _ = load_model(config["ckpt_path"], causal=True, cache_dir=config["paths"]["cache_dir"])
    if (cap := new_tokens_cap(model, config["max_new_tokens"])) < config["max_new_tokens"]:
        print(f"note: max_new_tokens={config['max_new_tokens']} is more than the model's context: "
              f"generating at most {cap} tokens", file=sys.stderr)

    # 3. Run, streaming each sample to the terminal.
    for i in range(config["num_samples"]):
        seed = None if config["seed"] is None else config["seed"] + i
        sys.stdout.write(config["prompt"])
        generate(model, tokenizer, config["prompt"], max_new_tokens=config["max_new_tokens"],
                 temperature=config["temperature"], top_k=config["top_k"], top_p=config["top_p"], seed=seed,
                 stream=lambda piece: (sys.stdout.write(piece), sys.stdout.flush()))
        sys.stdout.write("\n" + ("-" * 40 + "\n" if i + 1 < config["num_samples"] else ""))
