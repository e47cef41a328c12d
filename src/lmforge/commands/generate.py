"""`lmforge generate ckpt_path=... prompt=...`: stream a sample to the terminal."""

from omegaconf import DictConfig


def main(cfg: DictConfig):
    import sys

    from lmforge.config.validate import validate
    from lmforge.generation import generate
    from lmforge.runs.model import load_model

    config = validate(cfg, "generate")
    model, tokenizer, _ = load_model(config["ckpt_path"])
    for i in range(config["num_samples"]):
        seed = None if config["seed"] is None else config["seed"] + i
        sys.stdout.write(config["prompt"])
        generate(model, tokenizer, config["prompt"], max_new_tokens=config["max_new_tokens"],
                 temperature=config["temperature"], top_k=config["top_k"], top_p=config["top_p"], seed=seed,
                 stream=lambda piece: (sys.stdout.write(piece), sys.stdout.flush()))
        sys.stdout.write("\n" + ("-" * 40 + "\n" if i + 1 < config["num_samples"] else ""))
