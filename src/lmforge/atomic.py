"""Atomic writes: a reader, a crash or a full disk never leaves a half-written file or directory.

Every file lmforge writes (run files, checkpoints, caches, exports, tokenizers) goes through here:
written beside its target under a temporary name, flushed, then renamed into place. A write that
fails for lack of space or permission is a one-line `UserError` naming the path.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lmforge.errors import UserError

FILE_IN_THE_WAY = "a file is in the way of this directory"
# Errors that mean "this path cannot be written here", not a bug: reported in one line.
_UNWRITABLE = {errno.ENOSPC: "no space left on the device", errno.EFBIG: "file too large for the device",
               errno.EDQUOT: "disk quota exceeded", errno.EACCES: "permission denied",
               errno.EPERM: "permission denied", errno.EROFS: "read-only file system",
               errno.ENOTDIR: "a parent is not a directory", errno.EISDIR: "it is a directory"}


def unwritable_reason(exc: BaseException) -> str | None:
    """Why an OSError means "this path cannot be written here" (no space, no permission...), else None."""
    if not isinstance(exc, OSError):
        return None
    if exc.errno == errno.EEXIST and exc.filename and not os.path.isdir(exc.filename):  # mkdir(exist_ok=True)
        return FILE_IN_THE_WAY
    return _UNWRITABLE.get(exc.errno)


@contextlib.contextmanager
def unwritable_as_user_error(path: str | Path) -> Iterator[None]:
    """Turn OSErrors of the 'cannot write here' kind into `UserError: cannot write PATH: reason`."""
    try:
        yield
    except OSError as exc:
        if unwritable_reason(exc) is None:
            raise
        raise UserError(f"cannot write {path}: {unwritable_reason(exc)}") from exc


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Write to a temp file in the same folder, fsync, then rename over `path`."""
    path = Path(path)
    with unwritable_as_user_error(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            os.fchmod(fd, 0o644)  # mkstemp's 0600 would make run files unreadable to teammates
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return path


def write_text(path: str | Path, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


@contextlib.contextmanager
def publish_dir(target: str | Path, replace: bool = False) -> Iterator[Path]:
    """Yield an empty temp directory beside `target`; when the block ends without error, rename it
    to `target` (swapping out an existing one if `replace`, else keeping the one already there, as
    when a concurrent builder won the race). On error the temp directory is removed."""
    target = Path(target)
    tmp = target.parent / f".{target.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
    with unwritable_as_user_error(target):
        tmp.mkdir(parents=True)
        try:
            yield tmp
            if target.exists() and replace:
                os.replace(target, old)
            try:
                os.replace(tmp, target)
            except OSError:
                if not target.exists():  # not just a concurrent builder that got there first
                    raise
        except BaseException:
            if old.exists() and not target.exists():
                os.replace(old, target)  # put the previous version back
            raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.rmtree(old, ignore_errors=True)
