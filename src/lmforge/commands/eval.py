"""`lmforge eval ckpt_path=<run dir or .ckpt>`: test a finished run (see lmforge.evaluation)."""

from omegaconf import DictConfig


def main(cfg: DictConfig):
    from lmforge.evaluation import evaluate

    evaluate(cfg)
