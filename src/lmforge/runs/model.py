"""Load just a model and its tokenizer (for generate/export): from a run, a .ckpt or an HF directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from lmforge.errors import UserError
from lmforge.runs.checkpoints import find_checkpoint, read_checkpoint, run_dir_of
from lmforge.runs.load import saved_config


def load_model(path: str | Path) -> tuple[nn.Module, Any, dict]:
    """(model in eval mode, tokenizer, run config) — the config is {} for a Hugging Face directory."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = Path(path).expanduser()
    if (source / "config.json").is_file():
        try:
            return AutoModelForCausalLM.from_pretrained(str(source)).eval(), \
                AutoTokenizer.from_pretrained(str(source)), {}
        except (OSError, ValueError) as exc:
            raise UserError(f"{path}: not a loadable causal LM directory ({str(exc).splitlines()[0]})") from exc

    from lmforge.experiment import build_model

    config = saved_config(source)
    ckpt_path = find_checkpoint(source)
    if config.get("init_from"):  # the base weights must exist to rebuild the model (cheap if cached)
        from lmforge.finetune.init import init_model_dir

        config["model"]["path"] = str(init_model_dir(config["init_from"], config["paths"]["cache_dir"]))
    model = build_model(config)
    # `model.` is the LightningModule attribute; `_orig_mod.` what torch.compile (compile=true) adds.
    state = {k[len("model."):].replace("_orig_mod.", ""): v
             for k, v in read_checkpoint(ckpt_path)["state_dict"].items() if k.startswith("model.")}
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise UserError(f"{ckpt_path}: weights do not fit the model of its config "
                        f"({str(exc).splitlines()[0]})") from exc
    return model.eval(), run_tokenizer(ckpt_path), config


def run_tokenizer(ckpt_path: Path):
    """The tokenizer saved in the run directory of a checkpoint."""
    from transformers import AutoTokenizer

    run_dir = run_dir_of(ckpt_path)
    folder = run_dir / "tokenizer" if run_dir else None
    if folder is None or not folder.is_dir():
        raise UserError(f"{ckpt_path}: no tokenizer/ in its run directory; pass the run directory "
                        "or an exported model directory")
    return AutoTokenizer.from_pretrained(str(folder))
