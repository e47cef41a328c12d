"""`lmforge train`: compose conf/train.yaml + overrides, fit and test (see lmforge.training)."""

from omegaconf import DictConfig


def main(cfg: DictConfig):
    from lmforge.training import train

    return train(cfg)
