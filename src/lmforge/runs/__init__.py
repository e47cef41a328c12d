"""Run directories: what a run writes (config, metrics, metadata, checkpoints) and reading it back."""

from lmforge.runs.load import LoadedRun, load_run

__all__ = ["LoadedRun", "load_run"]
