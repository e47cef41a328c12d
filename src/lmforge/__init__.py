"""lmforge: build and fine-tune language models with Lightning + Hydra."""

__version__ = "0.1.0"


def load_run(path, overrides=None, checkpoint=None):
    """Rebuild a finished run (config, data, model with its weights): see `lmforge.experiment.load`."""
    from lmforge.experiment.load import load_run as _load_run

    return _load_run(path, overrides, checkpoint)
