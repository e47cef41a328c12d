"""OmegaConf resolvers used by the config tree (registered before Hydra composes)."""

from __future__ import annotations

import secrets

from omegaconf import OmegaConf


def register_resolvers() -> None:
    """Register `${lmforge.unique:}` (a short random id so that run dirs never collide)."""
    if not OmegaConf.has_resolver("lmforge.unique"):
        # use_cache: every read of hydra.run.dir within one composed config gives the same id.
        OmegaConf.register_new_resolver("lmforge.unique", lambda: secrets.token_hex(3), use_cache=True)
