"""Where the config tree lives, the resolvers it uses, and the schemas that validate it."""

from __future__ import annotations

from pathlib import Path


def conf_dir() -> Path:
    """The `conf/` tree: the repo's own in a source checkout, else the copy inside the wheel."""
    source = Path(__file__).resolve().parents[3] / "conf"
    if (source / "train.yaml").is_file():
        return source
    return Path(__file__).resolve().parents[1] / "conf"
