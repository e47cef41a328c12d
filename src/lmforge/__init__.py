"""lmforge: build and fine-tune language models with Lightning + Hydra."""

__version__ = "0.1.0"


def load_run(path, overrides=None, checkpoint=None):
    """Rebuild a finished run (config, data, model with its weights): see `lmforge.experiment.load`."""
    from lmforge.experiment.load import load_run as _load_run

    return _load_run(path, overrides, checkpoint)


def compose(command="train", overrides=()):
    """A command's config, composed and validated as the CLI would: see `lmforge.config.compose`."""
    from lmforge.config.compose import compose as _compose

    return _compose(command, overrides)


def run_train(config, run_dir, **options):
    """Train (then test) a composed `train` config in `run_dir`: see `lmforge.experiment.run`."""
    from lmforge.experiment.run import run_train as _run_train

    return _run_train(config, run_dir, **options)
