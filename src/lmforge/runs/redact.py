"""Keep secrets out of what a run saves: API keys, tokens and passwords are masked as `***`.

A secret is the value of anything whose name says it is one (a word `key`, `token`, `secret`,
`password`...: `WANDB_API_KEY`, `HF_TOKEN`, `db_password`; not `max_new_tokens`, `tokenizer`):
an environment variable, or an override on the command line such as
`+hydra.job.env_set.WANDB_API_KEY=...`. Such values of 8 characters or more (shorter ones would
mask ordinary words) are masked wherever they appear: in a config, a command line, a log line, a file.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Any

from lmforge.atomic import write_text

MASK = "***"
MIN_LENGTH = 8
_SECRET_WORD = re.compile(r"(key|token|secrets?|password|passwd|credentials?)$")  # apikey, pgpassword too


def is_secret_name(name: str) -> bool:
    """Whether a variable or config key named `name` (its last dotted part) holds a secret."""
    last = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name.rsplit(".", 1)[-1])  # apiKey -> api_Key
    words = re.split(r"[^a-zA-Z0-9]+", last.lower())
    return any(_SECRET_WORD.search(word) for word in words)


def secrets() -> list[str]:
    """The secret values this process knows, longest first: from its environment, its command line
    and the overrides of the Hydra job it runs (a sweep's worker process has no command line of its own)."""
    found = {v for k, v in os.environ.items() if is_secret_name(k)}
    for override in [*sys.argv[1:], *_job_overrides()]:
        key, sep, value = override.partition("=")
        if sep and is_secret_name(key.lstrip("+~")):
            found.add(value.strip().strip("'\""))
    return sorted((v for v in found if len(v) >= MIN_LENGTH), key=len, reverse=True)


def _job_overrides() -> list[str]:
    hydra_config = sys.modules.get("hydra.core.hydra_config")  # imported by then wherever a job runs
    if hydra_config is None or not hydra_config.HydraConfig.initialized():
        return []
    overrides = hydra_config.HydraConfig.get().overrides
    return [*overrides.hydra, *overrides.task]


def redact(value: Any, hidden: list[str] | None = None) -> Any:
    """`value` (str, or nested dicts/lists/tuples of them) with every secret replaced by `***`."""
    hidden = secrets() if hidden is None else hidden
    if not hidden:
        return value
    if isinstance(value, str):
        for secret in hidden:
            value = value.replace(secret, MASK)
        return value
    if isinstance(value, dict):
        return {k: redact(v, hidden) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact(v, hidden) for v in value)
    return value


def redact_file(path: str | Path) -> None:
    """Mask the secrets in a text file another library wrote (e.g. Hydra's multirun.yaml), in place
    and atomically; a missing or unchanged file is left alone."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return
    masked = redact(text)
    if masked != text:
        write_text(path, masked)


def drop_files_with_secrets(folder: str | Path, pattern: str) -> None:
    """Delete the files under `folder` matching `pattern` that hold a secret and cannot be masked in place:
    hand-off files no one reads again (a finished sweep's pickled submitit jobs and their results)."""
    hidden = [s.encode() for s in secrets()]
    for path in Path(folder).rglob(pattern) if hidden else ():
        try:
            if any(s in path.read_bytes() for s in hidden):
                path.unlink()
        except OSError:
            pass
