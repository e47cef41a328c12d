"""What each stage of a prepare did, from its tasks' datatrove stats: documents in and out of every step
and why documents were removed; and the lines printed at the end."""

from __future__ import annotations

import json
from pathlib import Path


def _number(value) -> float:
    return value.get("total", 0) if isinstance(value, dict) else value or 0


DROPPED = {"exact-dedup": "exact_duplicate", "minhash-dedup": "near_duplicate"}  # datatrove counts no reason


def _step_counts(name: str, stats: dict, stage: str) -> dict:
    """in/out/removed of one step from its stat counters (readers count documents, filters total/forwarded/
    dropped_<reason>, writers total)."""
    counts = {k: _number(v) for k, v in stats.items()}
    removed = {k.removeprefix("dropped_"): int(v) for k, v in counts.items() if k.startswith("dropped_") and v}
    removed.update({k: int(v) for k, v in counts.items() if k.startswith("skipped_") and v})
    if "documents" in counts:  # a reader
        n = int(counts["documents"])
        return {"step": name, "in": n + sum(removed.values()), "out": n, "removed": removed}
    total = int(counts.get("total", 0))
    dropped = int(counts.get("dropped", 0))
    if dropped and not removed:
        removed = {DROPPED.get(stage, "dropped"): dropped}
    out = int(counts.get("forwarded", total - dropped))
    return {"step": name, "in": total, "out": out, "removed": removed}


def summarize(logs: Path, stages: list[str]) -> dict:
    """Per stage, its steps' counts summed over the stage's tasks (each task's stats file, so that tasks
    finished by an earlier, interrupted run count too)."""
    summary = []
    for stage in stages:
        steps: list[tuple[str, dict]] = []
        for task_file in sorted((logs / stage / "stats").glob("*.json")):
            for i, step in enumerate(json.loads(task_file.read_text())):
                if i == len(steps):
                    steps.append((step["name"], {}))
                merged = steps[i][1]
                for key, value in step.get("stats", {}).items():
                    merged[key] = merged.get(key, 0) + _number(value)
        summary.append({"stage": stage, "steps": [_step_counts(name, stats, stage) for name, stats in steps]})
    readers = [s for s in (summary[0]["steps"] if summary else []) if "READER" in s["step"]]
    last_writer = [s for stage in summary for s in stage["steps"] if "WRITER" in s["step"]]
    return {"documents_in": sum(s["in"] for s in readers),
            "documents_out": last_writer[-1]["in"] if last_writer else 0,
            "stages": summary}


def _label(step: str) -> str:
    """'🔻 - FILTER: 🌍 Language' -> 'Language'."""
    name = step.split(": ", 1)[-1]
    first, _, rest = name.partition(" ")
    return rest if rest and not any(c.isalnum() for c in first) else name


def lines(stats: dict) -> list[str]:
    """The report printed at the end of a prepare."""
    out = [f"prepare: {stats['documents_in']} documents in, {stats['documents_out']} out "
           f"({len(stats.get('shards', []))} shards)"]
    for stage in stats["stages"]:
        for step in stage["steps"]:
            if step["in"] == step["out"] and not step["removed"]:
                continue
            why = ", ".join(f"{k} {v}" for k, v in sorted(step["removed"].items(), key=lambda kv: -kv[1]))
            out.append(f"  {stage['stage']:<18} {_label(step['step']):<30} {step['in']:>8} -> {step['out']:<8}"
                       + (f"  removed: {why}" if why else ""))
    return out
