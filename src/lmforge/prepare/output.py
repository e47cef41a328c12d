"""A prepare's output folder: its JSONL.gz shards, `stats.json`, and `.prepared` (the fingerprint of the
config and inputs that made them), written in that order by the last stage, so a folder without
`.prepared` is never a finished output; `.prepare/` holds the work in progress (datatrove's completions,
intermediate shards, logs) and goes once the output is published."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from datatrove.data import DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

from lmforge.atomic import write_json
from lmforge.errors import UserError

MARKER, WORK, STATS = ".prepared", ".prepare", "stats.json"
SHARD_SUFFIX = ".jsonl.gz"


def fingerprint(settings: dict, files: list[Path]) -> str:
    """Of the settings and each input's (path, size, mtime_ns): the same prepare of the same files."""
    items = [[str(f), f.stat().st_size, f.stat().st_mtime_ns] for f in files]
    blob = json.dumps([settings, items], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def finished_fingerprint(out: Path) -> str | None:
    """The fingerprint of the finished output in `out`, or None."""
    try:
        return json.loads((out / MARKER).read_text())["fingerprint"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def claim(out: Path, print_fingerprint: str, overwrite: bool) -> str:
    """Decide what to do with `out` for a prepare of this fingerprint: 'reuse' (finished by the same
    prepare), 'continue' (the same prepare's unfinished work, or nothing yet). A finished output of another
    prepare is replaced only with `overwrite`; a folder holding other files is refused."""
    if out.exists() and not out.is_dir():
        raise UserError(f"output_dir={out}: a file is in the way of this folder")
    done = finished_fingerprint(out)
    if done == print_fingerprint:
        return "reuse"
    work = out / WORK
    started = _read(work / "fingerprint")
    ours = done is not None or started is not None
    if out.is_dir() and any(out.iterdir()) and not ours:
        raise UserError(f"output_dir={out} holds files that are not a prepare's output: give a new or empty folder")
    if done is not None and not overwrite:
        raise UserError(f"output_dir={out} holds the output of another prepare (other settings or inputs): "
                        "overwrite=true replaces it, or give another output_dir")
    if started != print_fingerprint:  # another prepare's unfinished work, or another's finished output
        _clear(out)
    work.mkdir(parents=True, exist_ok=True)
    (work / "fingerprint").write_text(print_fingerprint)
    return "continue"


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _clear(out: Path) -> None:
    """Remove what a prepare wrote in `out`: the marker first (so nothing half-removed looks finished)."""
    (out / MARKER).unlink(missing_ok=True)
    for path in out.glob(f"*{SHARD_SUFFIX}"):
        path.unlink()
    (out / STATS).unlink(missing_ok=True)
    shutil.rmtree(out / WORK, ignore_errors=True)


class Publish(PipelineStep):
    """The last stage (one task): move the final shards into the output folder, write `stats.json` (each
    stage's documents in and out and its reasons for removal, from its tasks' stats), then `.prepared`."""

    name = "📦 Publish"
    type = "💾 - WRITER"

    def __init__(self, out: str, shards: str, stages: list[str], fingerprint: str, inputs: int) -> None:
        super().__init__()
        self.out, self.shards, self.stages, self.fingerprint, self.inputs = out, shards, stages, fingerprint, inputs

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        from lmforge.prepare.stats import summarize

        out, work = Path(self.out), Path(self.out) / WORK
        for shard in sorted(Path(self.shards).glob(f"*{SHARD_SUFFIX}")):
            os.replace(shard, out / shard.name)
        shards = sorted(p.name for p in out.glob(f"*{SHARD_SUFFIX}"))
        stats = summarize(work / "logs", self.stages)
        stats.update(inputs=self.inputs, shards=shards, fingerprint=self.fingerprint)
        write_json(out / STATS, stats)
        write_json(out / MARKER, {"fingerprint": self.fingerprint})
        for folder in work.iterdir():  # intermediate shards and signatures; logs and completions stay
            if folder.is_dir() and folder.name != "logs":
                shutil.rmtree(folder, ignore_errors=True)
        return
        yield
