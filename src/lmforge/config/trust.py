"""What a saved config (a run directory's, a checkpoint's, a fine-tuned run's parent's) may build.

A saved config is data someone else may have written: reading it must run no code of its own and
write nowhere but the reader's output and cache. So, before anything is imported or built:
- only the sections lmforge rebuilds are kept (`BUILT_SECTIONS`); trainer, callbacks, logger... of
  the run are dropped (the reading command brings its own);
- every `_target_` in them is one of the exact names lmforge ships (`ALLOWED_TARGETS`), its Hydra
  keys are the plain ones, no value asks for remote code, a hub kernel or an interpolation;
- what it would write is moved to the reader's cache (`confine_writes`). Paths it names (data files,
  a model or tokenizer directory) are only read, by loaders that run no code: weights-only
  checkpoints, safetensors, JSON tokenizers, `trust_remote_code` off.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from lmforge.errors import UserError

BUILT_SECTIONS = ("data", "model", "finetune", "module", "optimizer", "scheduler")

#: Every target a saved config may name: those of conf/'s data, tokenizer, model, module, optimizer,
#: scheduler and finetune groups (a test keeps the two in step), as exact names, never as packages.
ALLOWED_TARGETS = frozenset({
    "lmforge.data.audio_folder.AudioFolderDataModule",
    "lmforge.data.classification.ClassificationDataModule",
    "lmforge.data.coco.CocoDetectionDataModule",
    "lmforge.data.sft.SFTDataModule",
    "lmforge.data.text.TextDataModule",
    "lmforge.data.vision.DigitsDataModule",
    "lmforge.data.vision.MNISTDataModule",
    "lmforge.data.image_folder.ImageFolderDataModule",
    "lmforge.tokenizers.BPE",
    "lmforge.tokenizers.Bytes",
    "lmforge.tokenizers.Pretrained",
    "lmforge.models.audio.wav2vec2",
    "lmforge.models.causal_lm.gpt2",
    "lmforge.models.causal_lm.llama",
    "lmforge.models.causal_lm.modern",
    "lmforge.models.causal_lm.pretrained",
    "lmforge.models.detr.detr",
    "lmforge.models.mlp.MLP",
    "lmforge.models.sequence_classifier.sequence_classifier",
    "lmforge.models.image_classifier.resnet_small",
    "lmforge.models.image_classifier.convnext_tiny",
    "lmforge.models.image_classifier.vit_tiny",
    "lmforge.modules.audio_classifier.AudioClassifierModule",
    "lmforge.modules.causal_lm.CausalLMModule",
    "lmforge.modules.ctc_asr.CTCModule",
    "lmforge.modules.classifier.ClassifierModule",
    "lmforge.modules.detector.DetectorModule",
    "lmforge.modules.sequence_classifier.SequenceClassifierModule",
    "lmforge.modules.sft.SFTModule",
    "lmforge.modules.image_classifier.ImageClassifierModule",
    "torch.optim.Adam",
    "torch.optim.AdamW",
    "torch.optim.SGD",
    "lmforge.optim.muon.Muon",
    "lmforge.optim.schedules.constant",
    "lmforge.optim.schedules.cosine_warmup",
    "lmforge.optim.schedules.linear_warmup",
    "lmforge.optim.schedules.wsd",
    "lmforge.finetune.methods.Finetune",
    "lmforge.finetune.methods.LoRA",
})
HYDRA_KEYS = {"_target_", "_partial_", "_recursive_", "_convert_", "_args_"}
CONVERT_MODES = {"none", "partial", "object", "all"}
#: Tokenizer specs that save a tokenizer at their `path` when none is there yet.
WRITING_TOKENIZERS = {"lmforge.tokenizers.BPE", "lmforge.tokenizers.Bytes"}


def trusted_config(config: dict, source: str) -> dict:
    """`config` (read from the file `source`) with only its rebuilt sections, each checked: one
    UserError line naming `source`, the key and the value refused otherwise. Imports nothing."""
    kept = {key: value for key, value in config.items() if key in BUILT_SECTIONS or not _has_target(value)}
    for key, value in kept.items():
        if key not in BUILT_SECTIONS and key != "init_from":
            _check_plain(value, source, key)
    for section in BUILT_SECTIONS:
        if kept.get(section) is not None:
            _check(kept[section], source, section)
    init_from = kept.get("init_from")
    if init_from is not None and not isinstance(init_from, str):
        raise UserError(f"{source}: config key 'init_from' = {init_from!r} is not a path or model name")
    return kept


def _has_target(value: Any) -> bool:
    if isinstance(value, dict):
        return "_target_" in value or any(_has_target(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_target(v) for v in value)
    return False


def _refuse(source: str, key: str, value: Any, why: str) -> UserError:
    return UserError(f"{source}: config key '{key}' = {_short(value)} {why}; refusing to build it")


def _short(value: Any) -> str:
    text = repr(value) if not isinstance(value, str) else f"'{value}'"
    return text if len(text) <= 80 else text[:77] + "..."


def _check(value: Any, source: str, key: str) -> None:
    """A rebuilt section, recursively: allowed targets, plain Hydra keys, no remote code."""
    if isinstance(value, dict):
        if "_target_" in value:
            target = value["_target_"]
            if not isinstance(target, str) or target not in ALLOWED_TARGETS:
                raise _refuse(source, f"{key}._target_", target,
                              "is not a trusted target (a saved config may only build lmforge's shipped "
                              "data, model, module, optimizer, scheduler and finetune targets)")
        for name, item in value.items():
            child = f"{key}.{name}"
            if not isinstance(name, str):
                raise _refuse(source, child, name, "is not a config key")
            if name.startswith("_") and name not in HYDRA_KEYS:
                raise _refuse(source, child, item, "is not a key lmforge writes")
            if name in ("_partial_", "_recursive_") and not isinstance(item, bool):
                raise _refuse(source, child, item, "is not true or false")
            if name == "_convert_" and item not in CONVERT_MODES:
                raise _refuse(source, child, item, f"is not one of {sorted(CONVERT_MODES)}")
            if name == "trust_remote_code" and item not in (False, None):
                raise _refuse(source, child, item, "would run Python code shipped with a model")
            if name == "attn_implementation" and isinstance(item, str) and "/" in item:
                raise _refuse(source, child, item, "names a hub kernel, whose code would run")
            _check(item, source, child)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check(item, source, f"{key}[{i}]")
    else:
        _check_plain(value, source, key)


def _check_plain(value: Any, source: str, key: str) -> None:
    """A value outside any target: no interpolation (a saved config is resolved; `${...}` could
    decode into a new node or call a resolver)."""
    if isinstance(value, dict):
        for name, item in value.items():
            _check_plain(item, source, f"{key}.{name}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_plain(item, source, f"{key}[{i}]")
    elif isinstance(value, str) and "${" in value:
        raise _refuse(source, key, value, "is an interpolation, which a saved (resolved) config never holds")


def confine_writes(config: dict, cache_dir: str | Path, run_dir: Optional[Path]) -> dict:
    """A checked saved config whose writes go to the reader's places: every `cache_dir` and `paths`
    to `cache_dir`; a tokenizer it would train or save is the run's own `tokenizer/` (else one in the
    cache); no download (pass data.download=true to allow one)."""
    cache = str(cache_dir)
    own_tokenizer = run_dir / "tokenizer" if run_dir is not None else None
    tokenizer_path = str(own_tokenizer) if own_tokenizer and (own_tokenizer / "tokenizer.json").is_file() else None

    def confine(value: Any) -> Any:
        if isinstance(value, list):
            return [confine(v) for v in value]
        if not isinstance(value, dict):
            return value
        node = {k: confine(v) for k, v in value.items()}
        if "cache_dir" in node:
            node["cache_dir"] = cache
        if "download" in node:
            node["download"] = False
        if node.get("_target_") in WRITING_TOKENIZERS:
            node["path"] = tokenizer_path
        return node

    confined = {key: confine(value) if key in BUILT_SECTIONS else value for key, value in config.items()}
    confined["paths"] = {"cache_dir": cache}
    return confined
