"""Typed schemas of the toolkit's own config sections (the rest is checked against `_target_`s)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional


@dataclass
class Paths:
    root_dir: str
    data_dir: str
    log_dir: str
    cache_dir: str
    output_dir: str


@dataclass
class Finetune:
    """`finetune=full|lora|freeze`: which parameters train, and at which learning rates."""

    method: Literal["full", "lora", "freeze"] = "full"
    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.05
    target_modules: Optional[list[str]] = None  # None: a sensible default per architecture
    freeze_embeddings: bool = False
    freeze_layers: int = 0  # freeze the first N transformer layers
    train_only_head: bool = False
    head_lr: Optional[float] = None  # None: the optimizer's lr


@dataclass
class Train:
    """Top-level keys of `lmforge train` (besides the config groups)."""

    task_name: str = "train"
    seed: Optional[int] = 42
    ckpt_path: Optional[str] = None
    resume: Optional[Literal["auto"]] = None
    init_from: Optional[str] = None
    tags: list[str] = field(default_factory=list)
    train: bool = True
    test: bool = True
    compile: bool = False
    monitor: str = "val/loss"
    monitor_mode: Literal["min", "max"] = "min"
    optimized_metric: Optional[str] = None
    print_config: bool = True
    # Generation settings used by sample callbacks and `lmforge generate`.
    prompt: Optional[str] = None
    max_new_tokens: int = 64


@dataclass
class Eval:
    """Top-level keys of `lmforge eval`."""

    task_name: str = "eval"
    ckpt_path: str = "???"
    seed: Optional[int] = 42
    print_config: bool = False


@dataclass
class TokenizerCommand:
    """Top-level keys of `lmforge tokenizer`."""

    task_name: str = "tokenizer"
    seed: Optional[int] = 42
    print_config: bool = False


@dataclass
class Generate:
    """Top-level keys of `lmforge generate`."""

    task_name: str = "generate"
    ckpt_path: str = "???"
    prompt: str = ""
    max_new_tokens: int = 64
    temperature: float = 0.8
    top_k: Optional[int] = 50
    top_p: Optional[float] = None
    seed: Optional[int] = 42
    num_samples: int = 1
    print_config: bool = False


@dataclass
class Export:
    """Top-level keys of `lmforge export`."""

    task_name: str = "export"
    ckpt_path: str = "???"
    export_dir: str = "???"
    print_config: bool = False


@dataclass
class Report:
    """Top-level keys of `lmforge report`."""

    task_name: str = "report"
    runs: list[str] = field(default_factory=list)
    metrics: Optional[list[str]] = None
    keys: Optional[list[str]] = None
    sort_by: Optional[str] = None
    print_config: bool = False


# Sections of each command that are plain (no `_target_`) and have a schema here.
SECTION_SCHEMAS = {"paths": Paths, "finetune": Finetune}
COMMAND_SCHEMAS = {"train": Train, "eval": Eval, "tokenizer": TokenizerCommand,
                   "generate": Generate, "export": Export, "report": Report}
