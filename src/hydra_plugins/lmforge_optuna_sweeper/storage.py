"""Open an Optuna storage from the string a sweep config holds (light to import: Hydra scans it)."""

from __future__ import annotations

from pathlib import Path


def open_storage(storage: str):
    """An Optuna RDB URL (`sqlite:///x.db`, `postgresql://...`) as is, any other string as a journal
    file, which processes on several machines can share over a network file system."""
    if "://" in storage:
        return storage
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    Path(storage).parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(storage))


def journal_file(storage: str):
    """The journal file behind `storage`, or None for an RDB URL."""
    return None if "://" in storage else Path(storage)
