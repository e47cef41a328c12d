"""Build the objects of an experiment from its resolved config: data, model + module, trainer."""

from __future__ import annotations

import inspect
import logging
import os
import warnings
from pathlib import Path
from typing import Any, Optional

from hydra.utils import get_object, instantiate
from torch import nn

from lmforge.data.base import DataModule
from lmforge.data.contract import data_parameters, declared_dims
from lmforge.distributed import shards_parameters
from lmforge.errors import UserError
from lmforge.models.contract import check_model, context_length, input_embeddings
from lmforge.optim.contract import check_optimizer_spec, needs_whole_matrices


def check_init_from(config: dict) -> None:
    """`init_from` fills the model's `path` parameter: a model built from its own initialization (the
    native GPT, the MLP), whose factory takes no `path`, would silently ignore it, so that is refused."""
    model = config.get("model") or {}
    target = get_object(model["_target_"]) if model.get("_target_") else None
    if config.get("init_from") and (target is None or "path" not in inspect.signature(target).parameters):
        raise UserError(f"init_from={config['init_from']}: model {model.get('_target_', '?')} does not start from "
                        "a model directory; to fine-tune use model=hf or a finetune_* experiment, to continue "
                        "training an lmforge run use ckpt_path=")


def check_optimizer(config: dict) -> None:
    """Build the optimizer and scheduler once on a dummy parameter, before any data is prepared:
    torch's own range checks (a negative lr, betas outside [0, 1)) fail here, naming the section."""
    import torch

    param = torch.nn.Parameter(torch.zeros(1))
    for section in ("optimizer", "scheduler"):
        if not config.get(section):
            continue
        try:
            factory = instantiate(config[section], _convert_="all")
            if section == "optimizer":
                check_optimizer_spec(factory)([param])
        except (ValueError, TypeError) as exc:
            raise UserError(f"config section '{section}': {' '.join(str(exc).split())}") from exc
        if section == "optimizer" and needs_whole_matrices(factory) and \
                shards_parameters(config["trainer"].get("strategy")):
            raise UserError(f"optimizer {factory.func.__name__} updates each weight matrix as a whole, but "
                            "trainer.strategy (FSDP) leaves each rank a shard of it: use trainer=ddp or trainer=gpu")


def build_datamodule(config: dict, tokenizer: Any = None, processor: Any = None) -> DataModule:
    """Instantiate `data` and prepare it far enough to know its dims (input size, vocab...).

    `tokenizer` (the one of `init_from`) is handed to data that tokenizes with the model's own, `processor`
    (its image processor or feature extractor) to data that prepares inputs as the model's own does."""
    datamodule = instantiate(config["data"], _convert_="all")
    if not isinstance(datamodule, DataModule):
        raise UserError(f"config key 'data._target_': {config['data']['_target_']} is not an lmforge DataModule "
                        "(subclass lmforge.data.base.DataModule)")
    datamodule.run_seed = config.get("seed") or 0  # what seed_everything makes of a null seed
    if tokenizer is not None and datamodule.takes_model_tokenizer:
        datamodule.set_tokenizer(tokenizer)
    if processor is not None and datamodule.takes_model_processor:
        datamodule.set_processor(processor)
    datamodule.prepare_data()
    return datamodule


def fill_nulls(node: dict, values: dict[str, Any]) -> dict:
    """Set the parameters of a `_target_` node that are null (or absent), that follow the data (`FromData`)
    and that `values` knows."""
    params = data_parameters(get_object(node["_target_"]))
    return {**node, **{k: v for k, v in values.items() if k in params and node.get(k) is None}}


def check_dims(config: dict, dims: dict[str, Any]) -> None:
    """A size the data decides (model.input_size, num_classes...) set to another value would fail in the
    first forward pass: refused here, naming the key. vocab_size may exceed the tokenizer's (checked later)."""
    for section in ("model", "module"):
        params = data_parameters(get_object(config[section]["_target_"]))
        for name, value in dims.items():
            given = config[section].get(name)
            if name in params and name != "vocab_size" and isinstance(value, int) and given not in (None, value):
                raise UserError(f"config key '{section}.{name}': {given} does not match the data, which has {value} "
                                f"(leave it null: it follows the data)")


def build_model(config: dict) -> nn.Module:
    """The model of a (filled-in) config, with its fine-tuning method (LoRA, freezing) applied."""
    model = check_model(instantiate(config["model"], _convert_="all"))
    if config.get("finetune"):
        model = instantiate(config["finetune"], _convert_="all").apply(model)
    # from_pretrained returns eval mode, and Lightning keeps each submodule's mode: dropout would stay off.
    return model.train()


def build_module(config: dict, datamodule: DataModule, model_dir: Optional[Path] = None) -> tuple[Any, dict]:
    """The LightningModule (model inside) and the config with every data-derived value filled in.

    `model_dir` is the Hugging Face directory the weights start from (`init_from`, resolved once)."""
    config = dict(config)
    dims = declared_dims(datamodule, datamodule.dims)
    if model_dir is not None:
        config["model"] = {**config["model"], "path": config["model"].get("path") or str(model_dir)}
    check_dims(config, dims)
    config["model"] = fill_nulls(config["model"], dims)
    config["module"] = fill_nulls(config["module"], dims)
    model = build_model(config)
    check_compatible(model, datamodule)
    datamodule.check_splits()
    optimizer = check_optimizer_spec(instantiate(config["optimizer"], _convert_="all")) if config.get("optimizer") \
        else None
    scheduler = instantiate(config["scheduler"], _convert_="all") if config.get("scheduler") else None
    module = instantiate(config["module"], model=model, optimizer=optimizer, scheduler=scheduler, _convert_="all")
    if config.get("compile"):
        import torch

        module.model = torch.compile(module.model)
    return module, config


def check_compatible(model: nn.Module, datamodule: DataModule) -> None:
    """The data must fit the model: windows within its positions, every token id within its embedding."""
    positions = context_length(model)
    block = datamodule.context_length
    if positions and block and block > positions:
        key = datamodule.context_key
        raise UserError(f"{key}={block} is larger than the model's {positions} positions "
                        f"(lower {key}, or use a model with more positions)")
    if datamodule.document_mask:
        from lmforge.models.gpt import GPT

        if not isinstance(model, GPT):
            raise UserError(f"data.document_mask=true needs a native GPT (model.impl=native), not "
                            f"{type(model).__name__}")
    embeddings = input_embeddings(model)
    if datamodule.tokenizer is None or embeddings is None:
        return
    vocab = len(datamodule.tokenizer)
    if embeddings is not None and embeddings.num_embeddings < vocab:
        raise UserError(f"the tokenizer has {vocab} tokens but the model's embedding only "
                        f"{embeddings.num_embeddings} (model.vocab_size): ids past it would crash")


def device_slots(config: dict, sweep_dir: Optional[Path]) -> Optional[str]:
    """launcher=joblib (LMFORGE_DEVICE_SLOTS set, one job per worker): restrict this sweep job to its worker's
    slot of the devices and return them (CUDA_VISIBLE_DEVICES); None for a single run or another launcher."""
    if sweep_dir is None or not os.environ.get("LMFORGE_DEVICE_SLOTS"):
        return None
    from lmforge.sweeps.devices import restrict_devices

    per_job = config["trainer"]["devices"] if isinstance(config["trainer"]["devices"], int) else 1
    return restrict_devices(sweep_dir, int(os.environ["LMFORGE_DEVICE_SLOTS"]), per_job)


def build_loggers(config: dict, resume_step: Optional[int]) -> list:
    """The config's loggers; those whose target takes `resume_step` continue their history on resume."""
    loggers = []
    for node in (config.get("logger") or {}).values():
        if not node:
            continue
        takes_step = "resume_step" in inspect.signature(get_object(node["_target_"])).parameters
        loggers.append(instantiate(node, _convert_="all", **({"resume_step": resume_step} if takes_step else {})))
    return loggers


def build_trainer(config: dict, callbacks: list = (), loggers: Optional[list] = None, **overrides):
    """The Lightning Trainer with the config's callbacks (then `callbacks`) and `loggers` (default: the
    config's); `overrides` win over the config's trainer keys."""
    quiet_lightning_console()
    check_devices({**config["trainer"], **overrides})
    own = [instantiate(node, _convert_="all") for node in (config.get("callbacks") or {}).values() if node]
    if loggers is None:
        loggers = [instantiate(node, _convert_="all") for node in (config.get("logger") or {}).values() if node]
    return instantiate({**config["trainer"], **overrides}, callbacks=[*own, *callbacks], logger=loggers or False,
                       _convert_="all")


def check_nan_policy(config: dict, world_size: int) -> None:
    """nan_policy=skip skips an optimizer step, which Lightning refuses with several processes."""
    if config["nan_policy"] == "skip" and world_size > 1:
        raise UserError(f"nan_policy=skip works in one process; with {world_size} (trainer.devices x "
                        "trainer.num_nodes) use nan_policy=stop")


def module_for_test(config: dict, module: Any, trainer: Any, datamodule: DataModule,
                    model_dir: Optional[Path] = None) -> Any:
    """The module to test a checkpoint with after fitting: the fitted one, except under FSDP with several
    processes, where each parameter is left a flat view of this rank's shard: wrapped again for the test it
    cannot take the checkpoint's whole tensors, so the test gets a module built anew."""
    if trainer.world_size > 1 and shards_parameters(config["trainer"].get("strategy")):
        module, _ = build_module(config, datamodule, model_dir)
    return module


def check_devices(trainer: dict) -> None:
    """A device request the machine cannot meet is one line saying what it has (Lightning's own
    message does not say what to do)."""
    import torch

    accelerator, devices = trainer.get("accelerator"), trainer.get("devices")
    if accelerator in ("gpu", "cuda"):
        available = torch.cuda.device_count()
        if available == 0:
            raise UserError(f"trainer.accelerator={accelerator}, but this machine has no CUDA GPU (torch "
                            f"{torch.__version__} sees only the CPU): use trainer=cpu, or trainer=ddp_cpu for DDP")
        if isinstance(devices, int) and devices > available:
            raise UserError(f"trainer.devices={devices}, but this machine has {available} GPU(s)")
    if accelerator == "mps" and not torch.backends.mps.is_available():
        raise UserError("trainer.accelerator=mps, but Apple's MPS is not available here: use trainer=cpu")
    if accelerator not in (None, "auto", "cpu", "gpu", "cuda", "mps"):
        from lightning.pytorch.accelerators import AcceleratorRegistry

        if accelerator not in AcceleratorRegistry:  # a typo: the choices are named
            raise UserError(f"trainer.accelerator={accelerator}: expected one of auto, cpu, gpu, "
                            f"{', '.join(a for a in AcceleratorRegistry if a not in ('cpu', 'gpu'))}")
        if not AcceleratorRegistry[accelerator]["accelerator"].is_available():  # tpu without torch_xla
            raise UserError(f"trainer.accelerator={accelerator}, but this machine has no {accelerator.upper()} "
                            "(or its library is not installed): use trainer=cpu")


def quiet_lightning_console() -> None:
    """Lightning adds its own console handler; Hydra's root handlers already print and save to
    <run dir>/<command>.log, so drop Lightning's to avoid every message appearing twice."""
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")  # a deprecation inside Lightning itself
