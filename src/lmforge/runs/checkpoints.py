"""Finding and reading checkpoints: a `.ckpt` file or a run directory, with clear errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lmforge.errors import UserError

PREFERRED = ("best.ckpt", "last.ckpt")


def find_checkpoint(path: str | Path, prefer: tuple[str, ...] = PREFERRED) -> Path:
    """A `.ckpt` path as given, or the preferred checkpoint of a run directory."""
    p = Path(path).expanduser()
    if not p.exists():
        raise UserError(f"checkpoint or run directory not found: {path}")
    if p.is_file():
        return p
    folder = p / "checkpoints"
    for name in prefer:
        if (folder / name).is_file():
            return folder / name
    found = sorted(folder.glob("*.ckpt"), key=lambda f: f.stat().st_mtime) if folder.is_dir() else []
    if not found:
        raise UserError(f"{path}: no checkpoint found (looked for {folder}/{{{','.join(prefer)}}})")
    return found[-1]


def newest_checkpoint(run_dir: str | Path) -> Path | None:
    """For `resume=auto`: last.ckpt of the run directory, else its newest .ckpt, else None."""
    folder = Path(run_dir) / "checkpoints"
    if (folder / "last.ckpt").is_file():
        return folder / "last.ckpt"
    found = sorted(folder.glob("*.ckpt"), key=lambda f: f.stat().st_mtime) if folder.is_dir() else []
    return found[-1] if found else None


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a Lightning checkpoint on the CPU; a corrupt or foreign file is a one-line error."""
    import torch

    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a bad file
        raise UserError(f"{path}: not a readable checkpoint, corrupt or truncated "
                        f"({type(exc).__name__}: {str(exc).splitlines()[0][:120]})") from exc
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise UserError(f"{path}: not a Lightning checkpoint (no state_dict)")
    return ckpt


def run_dir_of(path: str | Path) -> Path | None:
    """The run directory a path belongs to (the directory itself, or <run>/checkpoints/x.ckpt)."""
    p = Path(path).expanduser().resolve()
    for candidate in (p, p.parent.parent if p.is_file() else p):
        if (candidate / ".hydra" / "config.yaml").is_file():
            return candidate
    return None
