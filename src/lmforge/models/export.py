"""Write a model and its tokenizer as a Hugging Face model directory that loads offline with
`AutoModelFor*.from_pretrained(dir)` and `AutoTokenizer.from_pretrained(dir)`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

from torch import nn

from lmforge.atomic import publish_dir
from lmforge.errors import UserError
from lmforge.models.contract import ConvertsForExport, Exportable, RefusesExport, unwrap
from lmforge.tokenizers.contract import SPECIAL_IDS, Tokenizer, special_ids

MARKER = "lmforge_export.json"  # marks a directory we wrote, so a re-export may replace it


def plain_model(model: nn.Module) -> Exportable:
    """The `transformers` model of `model`: unwraps torch.compile, merges LoRA adapters (peft) and
    converts a model of lmforge's own (the native GPT) to its stock class (same weights, same logits).
    A model that is none of these is refused in one line, with its own reason when it gives one."""
    model = unwrap(model)
    if isinstance(model, RefusesExport):
        raise UserError(model.not_exportable)
    if is_peft_model(model):  # fold the adapters into the base weights (in place)
        model = model.merge_and_unload()
    if isinstance(model, ConvertsForExport):
        model = model.to_hf()
    if not isinstance(model, Exportable):
        raise UserError(f"{type(model).__name__} is not a Hugging Face transformers model: export writes only "
                        "models that an AutoModel class loads (language models and their classifiers)")
    return model


def is_peft_model(model: nn.Module) -> bool:
    """Whether `model` is wrapped by peft (LoRA); peft is optional, and absent nothing can be."""
    try:
        from peft import PeftModel
    except ImportError:
        return False
    return isinstance(model, PeftModel)


def check_export_dir(export_dir: str | Path) -> Path:
    """The absolute export directory; a non-empty one that is not a previous lmforge export, or one
    that holds files the export did not write (notes, eval results), is refused: replacing it would
    delete them."""
    export_dir = Path(export_dir).expanduser().resolve()
    if export_dir.exists() and (not export_dir.is_dir() or
                                (any(export_dir.iterdir()) and not (export_dir / MARKER).exists())):
        raise UserError(f"export_dir {export_dir} exists and is not a previous lmforge export; "
                        "choose a new or empty directory")
    if export_dir.is_dir() and (export_dir / MARKER).exists():
        try:
            written = set(json.loads((export_dir / MARKER).read_text()).get("files") or ())
        except (OSError, ValueError, AttributeError):
            written = set()
        others = sorted(p.name for p in export_dir.iterdir() if p.name != MARKER and p.name not in written)
        if written and others:
            raise UserError(f"export_dir {export_dir} is a previous lmforge export that now also holds "
                            f"{', '.join(others[:3])}: replacing it would delete them; choose another directory")
    return export_dir


def export_hf(model: nn.Module, tokenizer: Any, export_dir: str | Path,
              generation: Optional[dict[str, Any]] = None) -> Path:
    """Save `model` (+ `tokenizer`, generation defaults) to `export_dir` and return its path.

    Files are written into a temporary directory beside `export_dir` and renamed into place
    (`lmforge.atomic.publish_dir`), so a crash never leaves half an export. A non-empty `export_dir`
    that is not a previous lmforge export is refused. `generation` (e.g. `{"temperature": 0.8, "top_k": 50}`) goes into
    generation_config.json beside the tokenizer's eos/pad ids. A peft-wrapped model is merged first.
    """
    export_dir = check_export_dir(export_dir)
    model = plain_model(model)
    config = model.config
    # a speech model's processor (feature extractor, CTC tokenizer) has no special ids to carry over
    for name, value in (special_ids(tokenizer) if isinstance(tokenizer, Tokenizer) else {}).items():
        # every transformers config has the three ids (None when unset): a declared part of PretrainedConfig
        if value is not None and getattr(config, name) is None:
            setattr(config, name, value)

    if model.can_generate():
        from transformers import GenerationConfig

        settings = {key: getattr(config, key) for key in SPECIAL_IDS}  # PretrainedConfig's three ids
        settings.update(generation or {})
        if {"temperature", "top_k", "top_p"} & set(generation or {}):
            settings.setdefault("do_sample", True)  # sampling settings mean sampling
        try:
            gen = GenerationConfig(**settings)
            gen.validate()
        except (TypeError, ValueError) as e:
            raise UserError(f"generation settings {generation}: {e}") from e
        model.generation_config = gen
    elif generation:
        raise UserError(f"generation settings were given but {type(model).__name__} does not generate")

    with publish_dir(export_dir, replace=True) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        files = sorted(p.name for p in tmp.iterdir())
        for file in tmp.iterdir():
            if file.is_file():
                file.chmod(0o644)  # some writers make 0600 files; an export is for others to read
        (tmp / MARKER).write_text(json.dumps({"format": "huggingface", "class": type(model).__name__,
                                              "files": files}) + "\n")
    return export_dir
