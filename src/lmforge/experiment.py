"""Build the objects of an experiment from its resolved config: data, model + module, trainer."""

from __future__ import annotations

import inspect
from typing import Any

from hydra.utils import get_object, instantiate



def build_datamodule(config: dict):
    """Instantiate `data` and prepare it far enough to know its dims (input size, vocab...)."""
    datamodule = instantiate(config["data"], _convert_="all")
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


def build_module(config: dict, datamodule) -> tuple[Any, dict]:
    """The LightningModule (model inside) and the config with every data-derived value filled in."""
    dims = dict(getattr(datamodule, "dims", {}) or {})
    config = dict(config)
    config["model"] = fill_from_data(config["model"], dims)
    config["module"] = fill_from_data(config["module"], dims)
    model = instantiate(config["model"], _convert_="all")
    optimizer = instantiate(config["optimizer"], _convert_="all") if config.get("optimizer") else None
    scheduler = instantiate(config["scheduler"], _convert_="all") if config.get("scheduler") else None
    module = instantiate(config["module"], model=model, optimizer=optimizer, scheduler=scheduler,
                         _convert_="all")
    if config.get("compile"):
        import torch

        module.model = torch.compile(module.model)
    module.run_config = config
    return module, config


def build_trainer(config: dict, **overrides):
    """The Lightning Trainer with the config's callbacks and loggers (`overrides` win over the config)."""
    callbacks = [instantiate(node, _convert_="all") for node in (config.get("callbacks") or {}).values() if node]
    loggers = [instantiate(node, _convert_="all") for node in (config.get("logger") or {}).values() if node]
    return instantiate({**config["trainer"], **overrides}, callbacks=callbacks, logger=loggers or False,
                       _convert_="all")
