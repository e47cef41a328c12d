"""run.json: how a run was made (command line, git state, package versions, parent run)."""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

PACKAGES = ("lmforge", "torch", "lightning", "hydra-core", "omegaconf", "transformers", "tokenizers",
            "torchmetrics", "wandb", "peft")


def git_state(cwd: str | Path) -> dict:
    """Commit and dirty flag of the git checkout at `cwd` ({} outside a checkout)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip()
    try:
        return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain"))}
    except (OSError, subprocess.SubprocessError):
        return {}


def versions() -> dict:
    found = {}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found


def run_info(command: str, run_dir: Path, **extra) -> dict:
    """The record written to run.json at start-up (updated with status and metrics at the end)."""
    return {
        "command": command,
        "argv": sys.argv,
        "cwd": str(Path.cwd()),
        "run_dir": str(run_dir),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "start_time": time.time(),
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "python": platform.python_version(),
        "git": git_state(Path.cwd()),
        "versions": versions(),
        "status": "running",
        **extra,
    }
