"""`lmforge export ckpt_path=... export_dir=...`: a Hugging Face model directory (see lmforge.export)."""

from omegaconf import DictConfig


def main(cfg: DictConfig):
    from lmforge.config.validate import validate
    from lmforge.models.export import export_hf
    from lmforge.runs.model import load_model

    config = validate(cfg, "export")
    model, tokenizer, _ = load_model(config["ckpt_path"])
    path = export_hf(model, tokenizer, config["export_dir"])
    auto = "AutoModelForSequenceClassification" if "SequenceClassification" in type(model).__name__ \
        else "AutoModelForCausalLM"
    print(f"exported: {path}  (load it with {auto}.from_pretrained('{path}'))")
