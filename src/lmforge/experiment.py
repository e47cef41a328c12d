"""Build the objects of an experiment from its resolved config: data, model + module, trainer."""

from __future__ import annotations

import inspect
from typing import Any

from hydra.utils import get_object, instantiate
from torch import nn

from lmforge.errors import UserError


def build_datamodule(config: dict):
    """Instantiate `data` and prepare it far enough to know its dims (input size, vocab...)."""
    datamodule = instantiate(config["data"], _convert_="all")
    tokenizer_from = getattr(datamodule, "set_tokenizer", None)
    if callable(tokenizer_from) and config.get("init_from"):
        from lmforge.finetune.init import init_tokenizer

        datamodule.set_tokenizer(init_tokenizer(config["init_from"], config["paths"]["cache_dir"]))
    prepare = getattr(datamodule, "prepare_data", None)
    if callable(prepare):
        prepare()
    return datamodule


def fill_from_data(node: dict, dims: dict[str, Any]) -> dict:
    """Set the parameters of a `_target_` node that are null (or absent) and that the data knows."""
    params = inspect.signature(get_object(node["_target_"])).parameters
    filled = dict(node)
    for key, value in dims.items():
        if key in params and filled.get(key) is None:
            filled[key] = value
    return filled


def build_model(config: dict) -> nn.Module:
    """The model of a (filled-in) config, with its fine-tuning method (LoRA, freezing) applied."""
    model = instantiate(config["model"], _convert_="all")
    if config.get("finetune"):
        from lmforge.finetune.methods import apply_finetune

        model = apply_finetune(model, config["finetune"])
    # from_pretrained returns eval mode, and Lightning keeps each submodule's mode: dropout would stay off.
    return model.train()


def build_module(config: dict, datamodule) -> tuple[Any, dict]:
    """The LightningModule (model inside) and the config with every data-derived value filled in."""
    dims = dict(getattr(datamodule, "dims", {}) or {})
    tokenizer = getattr(datamodule, "tokenizer", None)
    if tokenizer is not None:
        dims.setdefault("vocab_size", len(tokenizer))
    parent = None
    if config.get("init_from"):
        from lmforge.finetune.init import init_model_dir, parent_info

        model_dir = init_model_dir(config["init_from"], config["paths"]["cache_dir"])
        dims["path"] = str(model_dir)
        parent = parent_info(config["init_from"], model_dir)
    config = dict(config)
    config["model"] = fill_from_data(config["model"], dims)
    config["module"] = fill_from_data(config["module"], dims)
    model = build_model(config)
    check_compatible(model, datamodule, dims)
    optimizer = instantiate(config["optimizer"], _convert_="all") if config.get("optimizer") else None
    scheduler = instantiate(config["scheduler"], _convert_="all") if config.get("scheduler") else None
    module = instantiate(config["module"], model=model, optimizer=optimizer, scheduler=scheduler,
                         _convert_="all")
    if config.get("compile"):
        import torch

        module.model = torch.compile(module.model)
    module.run_config = config
    module.parent_info = parent
    return module, config


def check_compatible(model: nn.Module, datamodule, dims: dict[str, Any]) -> None:
    """The data must fit the model: windows within its positions, every token id within its embedding."""
    hf_config = getattr(model, "config", None)
    positions = getattr(hf_config, "n_positions", None) or getattr(hf_config, "max_position_embeddings", None)
    block = getattr(datamodule, "block_size", None) or getattr(datamodule, "max_length", None)
    if positions and block and block > positions:
        raise UserError(f"data.block_size={block} is larger than the model's {positions} positions "
                        f"(raise model.block_size or lower data.block_size)")
    embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    vocab = dims.get("vocab_size")
    if vocab and embeddings is not None and embeddings.num_embeddings < vocab:
        raise UserError(f"the tokenizer has {vocab} tokens but the model's embedding only "
                        f"{embeddings.num_embeddings} (model.vocab_size): ids past it would crash")


def build_trainer(config: dict, **overrides):
    """The Lightning Trainer with the config's callbacks and loggers (`overrides` win over the config)."""
    callbacks = [instantiate(node, _convert_="all") for node in (config.get("callbacks") or {}).values() if node]
    loggers = [instantiate(node, _convert_="all") for node in (config.get("logger") or {}).values() if node]
    return instantiate({**config["trainer"], **overrides}, callbacks=callbacks, logger=loggers or False,
                       _convert_="all")
