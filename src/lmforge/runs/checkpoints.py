"""Finding and reading checkpoints: a `.ckpt` file or a run directory, safely, with clear errors.

Every checkpoint is read with `torch.load(weights_only=True)`: lmforge stores only tensors and
plain containers in them, so a crafted file cannot run code when it is loaded.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any, Optional

import yaml

from lmforge.errors import UserError

log = logging.getLogger(__name__)
PREFERRED = ("best.ckpt", "last.ckpt")


def find_checkpoint(path: str | Path, prefer: tuple[str, ...] = PREFERRED) -> Path:
    """A `.ckpt` path as given, or the preferred checkpoint of a run directory (else its newest)."""
    p = Path(path).expanduser()
    if not p.exists():
        raise UserError(f"checkpoint or run directory not found: {path}")
    if p.is_file():
        return p
    folder = p / "checkpoints"
    for name in prefer:
        if (folder / name).is_file():
            return folder / name
    found = checkpoint_files(folder)
    if not found:
        raise UserError(f"{path}: no checkpoint found (looked for {folder}/{{{','.join(prefer)}}})")
    return found[-1]


def checkpoint_files(folder: Path) -> list[Path]:
    """The `.ckpt` files of a folder, oldest first (temporary files of unfinished writes excluded)."""
    if not folder.is_dir():
        return []
    return sorted((f for f in folder.glob("*.ckpt") if not f.name.startswith(".")), key=lambda f: f.stat().st_mtime)


def newest_valid_checkpoint(run_dir: str | Path) -> Optional[Path]:
    """For `resume=auto`: the checkpoint of the run directory with the highest step that loads.

    A truncated or corrupt file (a kill during a write that bypassed the atomic rename, a full disk)
    is skipped, with one line saying so, in favour of the previous valid one. When none loads, the run
    is not started again from scratch over them: that is an error."""
    newest, newest_key = None, None
    files = checkpoint_files(Path(run_dir) / "checkpoints")
    for path in reversed(files):
        try:
            ckpt = read_checkpoint(path, mmap=True)
        except UserError as exc:
            log.warning("resume=auto: skipping %s", exc)
            continue
        key = (int(ckpt.get("global_step", -1)), path.stat().st_mtime)
        if newest_key is None or key > newest_key:
            newest, newest_key = path, key
    if files and newest is None:
        raise UserError(f"resume=auto: none of the {len(files)} checkpoints in {Path(run_dir) / 'checkpoints'} "
                        "can be read (see above); replace the run with overwrite=true, or choose another hydra.run.dir")
    return newest


def read_checkpoint(path: str | Path, mmap: bool = False) -> dict[str, Any]:
    """Load a Lightning checkpoint on the CPU; a corrupt, foreign or unsafe file is a one-line error."""
    import torch

    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a bad or unsafe file
        text = str(exc)
        unsafe = re.search(r"GLOBAL (\S+) was not an allowed global|Unsupported global: (\S+)", text)
        if unsafe:
            raise UserError(f"{path}: refused to load: it holds objects other than tensors and plain containers "
                            f"({unsafe.group(1) or unsafe.group(2)}), and unpickling those could run code") from exc
        detail = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", text)
        reason = detail.group(1) if detail else (text.strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(f"{path}: not a readable checkpoint: corrupt, truncated or not a PyTorch file "
                        f"({type(exc).__name__}: {reason[:160]})") from exc
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise UserError(f"{path}: not a Lightning checkpoint (no state_dict)")
    return ckpt


def check_weights_fit(ckpt: dict[str, Any], module: Any, path: Path) -> None:
    """Refuse, before anything is written, a checkpoint whose weights do not fit `module` (another
    model shape or experiment), naming the first difference, instead of Lightning's key dump."""
    import torch

    from lmforge.models.contract import plain_key

    def shapes(state: dict) -> dict[str, tuple]:
        return {plain_key(k): tuple(v.shape) for k, v in state.items() if isinstance(v, torch.Tensor)}

    saved, built = shapes(ckpt["state_dict"]), shapes(module.state_dict())
    difference = next((f"{k}: {saved.get(k, 'missing')} in the checkpoint, {built.get(k, 'absent')} in the model"
                       for k in sorted(saved.keys() | built.keys()) if saved.get(k) != built.get(k)), None)
    if difference:
        raise UserError(f"{path}: its weights do not fit the model this config builds ({difference}); give the "
                        "overrides it was trained with, or start a new run")


def run_dir_of(path: str | Path) -> Optional[Path]:
    """The run directory a path belongs to (the directory itself, or <run>/checkpoints/x.ckpt)."""
    p = Path(path).expanduser().resolve()
    for candidate in (p, p.parent.parent if p.is_file() else p):
        if (candidate / ".hydra" / "config.yaml").is_file():
            return candidate
    return None


def saved_config(path: str | Path) -> dict:
    """The resolved config of a run directory or a checkpoint (from its run directory, else the file)."""
    run_dir = run_dir_of(path)
    if run_dir is not None:
        config_file = run_dir / ".hydra" / "config.yaml"
        try:
            config = yaml.safe_load(config_file.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise UserError(f"{config_file}: not a readable config ({str(exc).splitlines()[0]})") from exc
        if not isinstance(config, dict):
            raise UserError(f"{config_file}: not a config mapping")
        return config
    config = (read_checkpoint(find_checkpoint(path)).get("lmforge") or {}).get("config")
    if not config:
        raise UserError(f"{path}: no lmforge config in this checkpoint and no run directory around it")
    return config
