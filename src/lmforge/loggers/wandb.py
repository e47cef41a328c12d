"""W&B that never prompts and never hangs: offline unless credentials are present, and that records
the command line with its secrets masked."""

from __future__ import annotations

import netrc
import os
import secrets
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Literal, Optional

from lightning.pytorch.loggers import WandbLogger

from lmforge.atomic import write_text
from lmforge.errors import UserError
from lmforge.runs.redact import redact


def has_credentials() -> bool:
    """An API key in the environment or in ~/.netrc (where `wandb login` puts it)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (OSError, netrc.NetrcParseError):
        return False


def wandb_logger(project: str = "lmforge", name: Optional[str] = None, group: Optional[str] = None,
                 tags: Optional[list[str]] = None, save_dir: str = ".",
                 mode: Literal["auto", "online", "offline", "disabled"] = "auto", log_model: bool = False,
                 entity: Optional[str] = None, id: Optional[str] = None, resume_step: Optional[int] = None):
    """A Lightning WandbLogger writing under `save_dir/wandb`; mode=auto picks online only with a key.

    An explicit WANDB_MODE in the environment wins over `mode=auto`. The run id is kept in
    `save_dir/wandb/run_id`, so a run resumed there (`resume_step` set by the runner) continues the
    same W&B run.
    """
    if not os.environ.get("WANDB_MODE"):
        os.environ.pop("WANDB_MODE", None)  # an empty value would make wandb itself fail
    if mode == "auto":
        mode = os.environ.get("WANDB_MODE") or ("online" if has_credentials() else "offline")
    elif mode == "online" and not has_credentials():
        raise UserError("logger.wandb.mode=online needs a W&B key (run `wandb login` or set WANDB_API_KEY); "
                        "mode=offline keeps the run for `wandb sync`")
    # Keep W&B's own files (debug logs, artifact cache) inside the run directory too, per run,
    # unless the user chose other places before lmforge did.
    save = Path(save_dir)
    save.mkdir(parents=True, exist_ok=True)
    for var, sub in (("WANDB_CACHE_DIR", "cache"), ("WANDB_DATA_DIR", "data")):
        if os.environ.get(var) is None or os.environ.get(f"_LMFORGE_{var}") == os.environ.get(var):
            os.environ[var] = os.environ[f"_LMFORGE_{var}"] = str(save / "wandb" / sub)
    id_file = save / "wandb" / "run_id"
    if id is None and resume_step is not None and id_file.is_file():
        id = id_file.read_text().strip()
    if id is None:
        id = secrets.token_hex(4)  # W&B's own id format: 8 lowercase letters and digits
    write_text(id_file, id + "\n")
    name, group, tags = redact([name, group, tags or None])  # W&B keeps these in the run's record too
    return RedactedWandbLogger(project=project, name=name, group=group, tags=tags, save_dir=str(save),
                               mode=mode, log_model=log_model, entity=entity, id=id, resume="allow",
                               settings={"silent": True, "console": "off"} if mode != "online" else None)


class RedactedWandbLogger(WandbLogger):
    """Lightning's WandbLogger whose run records the command line (`args` of its metadata, which
    `wandb sync` uploads) with secrets masked: W&B reads sys.argv when the run starts."""

    @property
    def experiment(self):
        if self._experiment is not None:
            return super().experiment
        with _redacted_argv():
            return super().experiment


@contextmanager
def _redacted_argv() -> Iterator[None]:
    """sys.argv with secrets masked, for the time W&B reads it (restored: a DDP rank is started with it)."""
    argv = sys.argv
    sys.argv = redact(list(argv))
    try:
        yield
    finally:
        sys.argv = argv


def finish_run() -> None:
    """Close the W&B run of this job so that each job of a multirun is its own run, and W&B's service
    with it: the service is started once per process, its log in the first run's directory, and every
    later run of the process (a sweep's next job) would link its `debug-core.log` there, out of its own
    directory (which a resume then refuses)."""
    wandb = sys.modules.get("wandb")
    # getattr: a partly imported wandb has no run
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish()
        wandb.teardown()
