"""Which audio files a speech data set holds, with their label or transcript and split: a folder with one
subfolder per class (optionally under `train/`, `val/`, `test/`), a manifest table (CSV, TSV, JSONL with
`path` and `label` or `text`, optional `split`; paths relative to the manifest), or an LJSpeech-style
`metadata.csv` (`id|transcript|normalised transcript`, no header, audio in `wavs/<id>.wav`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from lmforge.data.audio_files import AUDIO_SUFFIXES
from lmforge.data.splits import split
from lmforge.data.tables import LINE, read_rows
from lmforge.errors import UserError

SPLITS = ("train", "val", "test")
SPLIT_NAMES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
               "dev": "val", "test": "test", "eval": "test"}


@dataclass(frozen=True)
class Entry:
    """One clip of a data set: its file, label or transcript (None when the source has none), split
    (None: decided by hash), and where it was named (`manifest:line`, or the file), for errors."""

    path: Path
    label: Optional[str]
    text: Optional[str]
    split: Optional[str]
    where: str


def read_entries(path: str | Path) -> list[Entry]:
    """The entries of a class folder, a manifest table or an LJSpeech metadata.csv at `path`."""
    path = Path(path).expanduser()
    if path.is_dir():
        return _folder(path)
    if not path.is_file():
        raise UserError(f"data.path: no such folder or manifest: {path}")
    if _is_ljspeech(path):
        return _ljspeech(path)
    return _manifest(path)


def _folder(root: Path) -> list[Entry]:
    top = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    split_dirs = [p for p in top if p.name.lower() in SPLIT_NAMES]
    parts = [(SPLIT_NAMES[p.name.lower()], p) for p in split_dirs] if split_dirs else [(None, root)]
    entries = []
    for split_name, folder in parts:
        for class_dir in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
            for file in sorted(class_dir.rglob("*")):
                if file.is_file() and file.suffix.lower() in AUDIO_SUFFIXES:
                    entries.append(Entry(file, class_dir.name, None, split_name, str(file)))
    if not entries:
        raise UserError(f"data.path: {root} holds no audio files ({', '.join(AUDIO_SUFFIXES)}) in class subfolders "
                        "(<folder>/<class>/<file>); or give a manifest with path and label or text columns")
    return entries


def _is_ljspeech(path: Path) -> bool:
    """A headerless pipe-separated table: LJSpeech's metadata.csv and the corpora that copy it."""
    try:
        with open(path, encoding="utf-8-sig") as f:
            first = f.readline()
    except (OSError, UnicodeDecodeError):
        return False
    fields = first.rstrip("\n").split("|")
    return path.suffix.lower() in (".csv", ".txt") and len(fields) in (2, 3) and fields[0].strip() != "path"


def _ljspeech(path: Path) -> list[Entry]:
    entries = []
    for number, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split("|")
        if len(fields) not in (2, 3) or not fields[0].strip():
            raise UserError(f"{path}:{number}: expected id|transcript|normalised transcript, got {line[:80]!r}")
        text = (fields[2] if len(fields) == 3 and fields[2].strip() else fields[1]).strip()
        audio = path.parent / "wavs" / f"{fields[0].strip()}.wav"
        entries.append(Entry(audio, None, text, None, f"{path}:{number}"))
    return entries


def _manifest(path: Path) -> list[Entry]:
    rows = read_rows(path)
    entries = []
    for row in rows:
        where = f"{path}:{row[LINE]}"
        file = _cell(row, "path")
        if file is None:
            raise UserError(f"{where}: no 'path' (a manifest has columns path, and label or text, optional split)")
        label, text, split_name = _cell(row, "label"), _cell(row, "text"), _cell(row, "split")
        if label is None and text is None:
            raise UserError(f"{where}: neither a 'label' nor a 'text' (a manifest has columns path, and label or "
                            "text, optional split)")
        if split_name is not None:
            if split_name.lower() not in SPLIT_NAMES:
                raise UserError(f"{where}: split {split_name!r} is none of {', '.join(sorted(SPLIT_NAMES))}")
            split_name = SPLIT_NAMES[split_name.lower()]
        entries.append(Entry((path.parent / file).expanduser(), label, text, split_name, where))
    return entries


def _cell(row: dict, column: str) -> Optional[str]:
    value = row.get(column)
    if value is None or isinstance(value, (list, dict, bool)):
        return None
    text = str(int(value) if isinstance(value, float) and value.is_integer() else value).strip()
    return text or None


def assign_splits(entries: list[Entry], fractions: dict[str, float], seed: int,
                  by: Optional[str]) -> dict[str, list[Entry]]:
    """Train/val/test: the split an entry names, else a hash of its file (per label when `by="label"`, so
    that every class keeps clips in train). With no entry naming a test split and `fractions["test"]`
    0, test is the val split."""
    out: dict[str, list[Entry]] = {name: [] for name in SPLITS}
    named = [e for e in entries if e.split is not None]
    for entry in named:
        out[entry.split].append(entry)
    free = [e for e in entries if e.split is None]
    wanted = {name: fraction for name, fraction in fractions.items() if not out[name] and fraction > 0}
    groups: dict[Optional[str], list[Entry]] = {}
    for entry in free:
        groups.setdefault(entry.label if by == "label" else None, []).append(entry)
    for key in sorted(groups, key=str):
        for name, part in split(groups[key], wanted, seed, key=lambda e: str(e.path), min_each=1).items():
            out[name].extend(part)
    if not out["test"]:
        out["test"] = out["val"]
    for name in ("train", "val"):
        if not out[name]:
            raise UserError(f"data.path: no {name} clips (too few files to split, or none named split={name}); "
                            "add files or set data.val_fraction")
    return out
