"""One live run per directory: an exclusive lock held for the life of the process.

The lock is `fcntl.flock` on `<run dir>/.lock`, which the kernel releases when the process dies,
even by `kill -9`: a lock file left behind by a killed run is recognised as stale and taken over.
The file records who holds it, for the error the second run prints. A process keeps the locks
it took until it exits (a sweep's jobs may run one after another in one process).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path

from lmforge.atomic import unwritable_as_user_error
from lmforge.errors import UserError
from lmforge.runs.redact import redact

LOCK_NAME = ".lock"  # in the run directory
_HELD: dict[Path, int] = {}  # run directory -> file descriptor holding its lock, in this process


class RunLock:
    """`RunLock(run_dir).acquire()` (held until released or this process exits) — raises a one-line
    UserError naming the holder if another live process has it."""

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> "RunLock":
        key = self.path.resolve()
        if key in _HELD:
            self._fd = _HELD[key]
            return self
        try:
            with unwritable_as_user_error(self.path):
                self.path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                raise
            raise UserError(f"{self.path} is a link: the run lock is a file of the run directory itself; "
                            "remove the link") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self.holder()
            os.close(fd)
            who = (f"pid {holder.get('pid')} on {holder.get('host')} since {holder.get('since')}"
                   if holder else "another process")
            raise UserError(f"{self.path.parent} is in use by a live run ({who}); wait for it to end or "
                            "choose another hydra.run.dir") from None
        self._fd = _HELD[key] = fd
        return self

    def record_holder(self) -> None:
        """Write who holds the lock (for the error another run prints); done once the run may go on,
        so that a run refused here leaves the directory as it was."""
        record = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%dT%H:%M:%S"),
                  "argv": redact(sys.argv)}
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, (json.dumps(record) + "\n").encode(), 0)

    def holder(self) -> dict:
        try:
            return json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            return {}

    def release(self) -> None:
        if self._fd is not None:
            _HELD.pop(self.path.resolve(), None)
            os.close(self._fd)  # closing releases the flock
            self._fd = None

    @classmethod
    def guard(cls, folder: str | Path) -> "RunLock | None":
        """For a command writing into a folder that is not its own run (export, report): refused while a
        live run holds it; a folder that has a lock file (a run's) is locked until this process exits,
        so that no run starts there meanwhile. A folder without one is no run's: nothing to take."""
        if not (Path(folder) / LOCK_NAME).is_file():
            return None
        return cls(folder).acquire()
