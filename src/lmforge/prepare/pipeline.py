"""A prepare's stages from its config: read, extract, filter and (optionally) mask PII in one stage,
then exact and near-duplicate removal across every task's shard, then the publishing of the output."""

from __future__ import annotations

from pathlib import Path

from lmforge.errors import UserError
from lmforge.prepare.output import WORK, Publish

# The steps of the first stage, in the order they run; each is a `_target_` node of `prepare` or null.
FILTER_STEPS = ("extractor", "url_filter", "language", "gopher_repetition", "gopher_quality", "c4_quality",
                "fineweb_quality", "pii")
DEDUP_STEPS = ("exact_dedup", "near_dedup")
STEPS = ("reader", *FILTER_STEPS, *DEDUP_STEPS)


def check_keys(spec: dict) -> None:
    for key in spec:
        if key not in STEPS:
            raise UserError(f"unknown config key 'prepare.{key}' (prepare takes: {', '.join(STEPS)})")


def build_stages(steps: dict, files: list[Path], out: Path, tasks: int, fingerprint: str) -> list:
    """(name, datatrove steps, tasks) of every stage, intermediate shards under `out/.prepare`."""
    from datatrove.pipeline.writers import JsonlWriter

    work = out / WORK
    listings = work / "inputs"
    listings.mkdir(parents=True, exist_ok=True)
    dedups = [steps[key] for key in DEDUP_STEPS if steps.get(key)]

    def signatures(i: int) -> list:  # taken where the shard that dedup `i` reads is written
        return [dedups[i].signatures(work)] if i < len(dedups) else []

    first = [*steps["reader"].readers(files, listings), *(steps[k] for k in FILTER_STEPS if steps.get(k))]
    current = work / "filtered"
    stages = [("filter", [*first, JsonlWriter(str(current), output_filename="${rank}.jsonl.gz"), *signatures(0)],
               tasks)]
    for i, dedup in enumerate(dedups):
        stages += dedup.stages(current, work, tasks, signatures(i + 1))
        current = work / dedup.folder
    names = [name for name, _, _ in stages]
    stages.append(("publish", [Publish(str(out), str(current), names, fingerprint, len(files))], 1))
    return stages
