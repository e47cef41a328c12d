"""Typed schemas of each command's own keys: types and ranges only, the values live in conf/.

Sections with a `_target_` need no schema here: the signature of their target is their schema.
A command's config may hold its plain keys (below), `_target_` sections (`SECTIONS`), collections
of named `_target_` nodes (callbacks, logger) and overlays (sections patching a saved run's config).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Annotated, Literal, Optional, Union

from pydantic import AfterValidator, ConfigDict, Field
from pydantic.dataclasses import dataclass as typed

STRICT = ConfigDict(extra="forbid")
Positive = Annotated[int, Field(ge=1)]
Seed = Optional[Annotated[int, Field(ge=0, le=2**32 - 1)]]  # what numpy's seeding takes
NonNegative = Annotated[int, Field(ge=0)]
Fraction = Annotated[float, Field(ge=0, le=1)]


def _duration(text: str) -> str:
    if not re.fullmatch(r"\d+:\d\d:\d\d:\d\d", text.strip()):
        raise ValueError("expected a duration DD:HH:MM:SS (e.g. 00:04:00:00) or a mapping like {hours: 4}")
    return text


def _some(items: list) -> list:
    if not items:
        raise ValueError("expected at least one file, directory, glob or hf: dataset (null: the bundled corpus)")
    return items


def _some_inputs(items: list) -> list:
    if not items:
        raise ValueError("expected at least one file, folder or glob to prepare")
    return items


def _some_held_out(items: list) -> list:
    if not items:
        raise ValueError("expected at least one file, directory, glob or hf: dataset (null: validation held out "
                         "of data.paths)")
    return items


def _path(text: str) -> str:
    if not text.strip():
        raise ValueError("expected a non-empty path")
    return text


def _devices(value: Union[int, list[int], str]) -> Union[int, list[int], str]:
    fine = (value == -1 or value >= 1 if isinstance(value, int) else
            all(i >= 0 for i in value) if isinstance(value, list) else
            re.fullmatch(r"\s*(auto|-1|\d+\s*(,\s*\d+\s*)*,?)\s*", value))
    if not fine:
        raise ValueError("expected a count >= 1, -1 (every device), 'auto', or device ids like [0, 1] or '0,1'")
    return value


# A path given explicitly: `ckpt_path=` (empty) would otherwise read as "none" and silently start afresh.
PathText = Annotated[str, AfterValidator(_path)]

# Where a corpus comes from: null means the bundled one, so an empty list given explicitly is a mistake.
Sources = Optional[Annotated[list[str], AfterValidator(_some)]]
# Where validation text comes from instead: null means held out of the training sources.
ValSources = Optional[Annotated[list[str], AfterValidator(_some_held_out)]]

# A fraction of the batches (a float in [0, 1]) or a count of them (an int); 2.0 is neither. The float
# first: its range is the error shown for 1.5.
Batches = Optional[Union[Annotated[float, Field(ge=0, le=1)], Annotated[int, Field(ge=0, strict=True)]]]
Duration = Union[Annotated[str, AfterValidator(_duration)],
                 dict[Literal["weeks", "days", "hours", "minutes", "seconds", "milliseconds"], Annotated[float, Field(ge=0)]]]

# Lightning's classes check these ranges only when built (after the run directory is claimed, and without
# naming the key) or not at all: tighter hints for their parameters, used in place of their signature's.
LIBRARY_HINTS: dict[str, dict[str, object]] = {
    "lightning.pytorch.trainer.trainer.Trainer": {
        "max_epochs": Optional[Annotated[int, Field(ge=-1)]],  # -1: no limit
        "max_steps": Annotated[int, Field(ge=-1)],
        "max_time": Optional[Duration],
        "accumulate_grad_batches": Positive,
        "val_check_interval": Optional[Union[Annotated[int, Field(ge=1, strict=True)],
                                             Annotated[float, Field(gt=0, le=1)], Duration]],
        "check_val_every_n_epoch": Optional[Positive],
        "devices": Annotated[Union[int, list[int], str], AfterValidator(_devices)],
        "num_nodes": Positive,
        "limit_train_batches": Batches,
        "limit_val_batches": Batches,
        "limit_test_batches": Batches,
        "limit_predict_batches": Batches,
        "overfit_batches": Batches,
        "gradient_clip_val": Optional[Annotated[float, Field(ge=0)]],
        "log_every_n_steps": Optional[NonNegative],
        "num_sanity_val_steps": Optional[Annotated[int, Field(ge=-1)]],
    },
    # datatrove's quality rules (lmforge prepare): fractions in [0, 1], counts and lengths >= 0.
    "datatrove.pipeline.filters.gopher_quality_filter.GopherQualityFilter": {
        **dict.fromkeys(("min_doc_words", "max_doc_words", "min_avg_word_length", "max_avg_word_length",
                         "min_stop_words"), Optional[NonNegative]),
        **dict.fromkeys(("max_symbol_word_ratio", "max_bullet_lines_ratio", "max_ellipsis_lines_ratio",
                         "max_non_alpha_words_ratio"), Optional[Fraction]),
    },
    "datatrove.pipeline.filters.gopher_repetition_filter.GopherRepetitionFilter": dict.fromkeys(
        ("dup_line_frac", "dup_para_frac", "dup_line_char_frac", "dup_para_char_frac"), Optional[Fraction]),
    "datatrove.pipeline.filters.c4_filters.C4QualityFilter": dict.fromkeys(
        ("min_num_sentences", "min_words_per_line", "max_word_length"), Annotated[int, Field(ge=-1)]),  # -1: off
    "datatrove.pipeline.filters.fineweb_quality_filter.FineWebQualityFilter": {
        **dict.fromkeys(("line_punct_thr", "short_line_thr", "char_duplicates_ratio", "new_line_ratio"), Fraction),
        "short_line_length": NonNegative,
    },
    "lightning.pytorch.callbacks.early_stopping.EarlyStopping": {
        "patience": NonNegative,
        "min_delta": Annotated[float, Field(ge=0)],
    },
}


# Sections whose numbers may be inf (a limit or threshold that never triggers); everywhere else inf and
# nan are refused: a learning rate, a dropout or a size of inf is a typo that would only show as nan later.
OPEN_ENDED_SECTIONS = ("trainer", "callbacks", "logger")


@typed(config=STRICT)
class Paths:
    root_dir: str
    data_dir: str
    log_dir: str
    cache_dir: str
    output_dir: str


@typed(config=STRICT)
class Train:
    task_name: str
    seed: Seed
    ckpt_path: Optional[PathText]
    resume: Optional[Literal["auto"]]
    overwrite: bool
    init_from: Optional[PathText]
    tags: list[str]
    train: bool
    test: bool
    compile: bool
    monitor: str
    monitor_mode: Literal["min", "max"]
    optimized_metric: Optional[str]
    nan_policy: Literal["stop", "skip"]
    print_config: bool
    prompt: Optional[str]
    max_new_tokens: Positive


@typed(config=STRICT)
class Eval:
    task_name: str
    ckpt_path: PathText
    seed: Seed
    overwrite: bool
    print_config: bool


@typed(config=STRICT)
class Harness:
    """`lmforge eval ... harness.tasks=[...]`: lm-evaluation-harness tasks instead of the run's test loop."""

    tasks: Optional[list[str]]
    include_path: Optional[Union[str, list[str]]]
    limit: Optional[Positive]
    num_fewshot: Optional[NonNegative]
    batch_size: Positive
    device: Optional[str]
    log_samples: bool


@typed(config=STRICT)
class Tokenizer:
    task_name: str
    seed: Seed
    overwrite: bool
    print_config: bool


@typed(config=STRICT)
class Generate:
    task_name: str
    ckpt_path: PathText
    prompt: str
    max_new_tokens: Positive
    temperature: Annotated[float, Field(ge=0)]
    top_k: Optional[Positive]
    top_p: Optional[Annotated[float, Field(gt=0, le=1)]]
    seed: Seed
    num_samples: Positive
    print_config: bool


@typed(config=STRICT)
class Export:
    task_name: str
    ckpt_path: PathText
    export_dir: PathText
    print_config: bool


@typed(config=STRICT)
class Report:
    task_name: str
    runs: list[str]
    metrics: Optional[list[str]]
    keys: Optional[list[str]]
    sort_by: Optional[str]
    sort_order: Optional[Literal["min", "max"]]
    alpha: float
    out: Optional[str]
    print_config: bool


@typed(config=STRICT)
class Prepare:
    task_name: str
    inputs: Annotated[list[str], AfterValidator(_some_inputs)]
    output_dir: PathText
    overwrite: bool
    print_config: bool


@dataclass(frozen=True)
class Command:
    """A command (`lmforge <name>`, run by lmforge/commands/<name>.py from conf/<name>.yaml): its one-line
    summary and what its composed config may hold, section by section."""

    summary: str
    keys: type  # the typed schema of its plain top-level keys
    sections: tuple[str, ...] = ()  # `_target_` nodes
    collections: tuple[str, ...] = ()  # named `_target_` nodes: callbacks.model_checkpoint, logger.csv
    overlays: tuple[str, ...] = ()  # patches of the saved run's config: any key, checked against its target
    plain: dict[str, type] = field(default_factory=lambda: {"paths": Paths})


COMMANDS = {
    # Sections are checked in this order: `tokenizer` before `data`, which interpolates it, so that an
    # error names the key the user typed.
    "train": Command("train any experiment (MLP, pretraining, fine-tuning), then test it", Train, sections=("tokenizer", "data", "model", "module", "optimizer", "scheduler", "trainer",
                                      "finetune", "checkpoint"),
                     collections=("callbacks", "logger")),
    "eval": Command("test a checkpoint or run directory; writes metrics.json (and predictions)", Eval, sections=("trainer",), collections=("logger",), overlays=("data", "module"),
                    plain={"paths": Paths, "harness": Harness}),
    "tokenizer": Command("train a byte-level BPE tokenizer on a corpus", Tokenizer, sections=("tokenizer", "data")),
    "generate": Command("sample text from a checkpoint, run directory or exported model", Generate),
    "export": Command("write a checkpoint as a Hugging Face model directory", Export),
    "report": Command("compare runs and sweeps: a table of their metrics and configs", Report),
    "prepare": Command("turn web archives, JSONL, Parquet or text into clean, deduplicated training shards",
                       Prepare, sections=("prepare", "executor")),
}
