"""`lmforge export ckpt_path=... export_dir=...`: a Hugging Face model directory (LoRA merged)."""

from __future__ import annotations

import json

from omegaconf import DictConfig

from lmforge.config.validate import validate


def main(cfg: DictConfig) -> None:
    # 1. Validate.
    config = validate(cfg, "export")

    from lmforge.experiment.load import load_model
    from lmforge.models.export import MARKER, check_export_dir, export_hf
    from lmforge.runs.directory import read_paths, refuse_overlap
    from lmforge.runs.lock import RunLock

    # 2. Build the model with its weights (once the target is known to be no live run's, apart from what is
    # read, and writable), 3. write it atomically (replacing a previous export).
    RunLock.guard(config["export_dir"])
    for source in read_paths(config["ckpt_path"]):
        refuse_overlap("export_dir", config["export_dir"], source)
    check_export_dir(config["export_dir"])
    model, processor, _ = load_model(config["ckpt_path"], cache_dir=config["paths"]["cache_dir"])
    path = export_hf(model, processor, config["export_dir"])
    # the class written (LoRA merged): GPT2ForSequenceClassification, ResNetForImageClassification, ...
    task = json.loads((path / MARKER).read_text())["class"].partition("For")[2]
    if task == "SequenceClassification" and model.config.model_type.startswith("wav2vec2"):
        task = "AudioClassification"  # the same class name, an audio model's Auto class
    auto = f"AutoModelFor{task}" if task in ("SequenceClassification", "ImageClassification", "ObjectDetection",
                                             "AudioClassification", "CTC") else "AutoModelForCausalLM"
    print(f"exported: {path}  (load it with {auto}.from_pretrained('{path}'))")
