"""Image classifiers from `transformers` vision families, built from a config (no download): a small
ResNet, ConvNeXt or ViT, or, with `path` (`init_from`), a pretrained one whose head is made anew
for the data's label set. Each is a stock `*ForImageClassification`: it exports as it is and loads
with `AutoModelForImageClassification` and the `image-classification` pipeline."""

from __future__ import annotations

import logging
from typing import Annotated, Any, Optional

from pydantic import Field
from torch import nn

from lmforge.data.contract import FromData
from lmforge.errors import UserError

log = logging.getLogger(__name__)
Sizes = list[Annotated[int, Field(ge=1)]]


def _labels(num_classes: Optional[int], labels: Optional[list[str]]) -> dict[str, Any]:
    """The label keys of a transformers config: the count, and the names both ways."""
    if num_classes is None:
        raise UserError("model.num_classes is not set: it follows the data (data=image_folder), or set it")
    names = [str(n) for n in labels] if labels and len(labels) == num_classes else [str(i) for i in range(num_classes)]
    return {"num_labels": num_classes, "id2label": dict(enumerate(names)),
            "label2id": {name: i for i, name in enumerate(names)}}


def pretrained(path: str, num_classes: Optional[int], labels: Optional[list[str]],
               image_size: Optional[int]) -> nn.Module:
    """The image classifier at `path` with a new head when the label set differs from its own."""
    from transformers import AutoConfig, AutoModelForImageClassification

    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=False)
    except (OSError, ValueError, KeyError) as exc:
        raise UserError(f"model.path: cannot load a model config from {path!r}: {str(exc).splitlines()[0]}") from exc
    own = int(getattr(config, "image_size", 0) or 0)  # an optional key: only ViT-like models fix their input size
    if image_size and own and own != image_size:
        raise UserError(f"data.image_size={image_size}, but the model at {path} reads {own}x{own} images: set "
                        f"data.image_size={own}")
    wanted = _labels(num_classes, labels)
    same = [config.id2label.get(i) for i in range(config.num_labels)] == list(wanted["id2label"].values())
    try:  # the label names set the number of labels (num_labels beside them would be refused)
        model = AutoModelForImageClassification.from_pretrained(
            path, trust_remote_code=False, ignore_mismatched_sizes=True, id2label=wanted["id2label"],
            label2id=wanted["label2id"])
    except (OSError, ValueError, KeyError) as exc:
        raise UserError(f"model.path: cannot load an image classifier from {path!r}: {str(exc).splitlines()[0]}") \
            from exc
    if not same:  # another label set, maybe of the same size: the head starts afresh
        for module in model.classifier.modules():  # every *ForImageClassification names its head `classifier`
            if isinstance(module, nn.Linear):
                module.reset_parameters()
        log.info("init_from: a new head for %d classes (%s)", num_classes, ", ".join(wanted["id2label"].values()))
    return model


def resnet_small(num_classes: FromData[Optional[int]] = None, labels: FromData[Optional[list[str]]] = None,
                 image_size: FromData[Optional[int]] = None, path: Optional[str] = None,
                 embedding_size: Annotated[int, Field(ge=1)] = 16, hidden_sizes: Sizes = (16, 32, 64, 128),
                 depths: Sizes = (1, 1, 1, 1)) -> nn.Module:
    """A ResNet of basic blocks (~0.3M parameters as set); `path`: a pretrained one instead."""
    if path:
        return pretrained(path, num_classes, labels, image_size)
    from transformers import ResNetConfig, ResNetForImageClassification

    _same_length(hidden_sizes, depths)
    return ResNetForImageClassification(ResNetConfig(
        num_channels=3, embedding_size=embedding_size, hidden_sizes=list(hidden_sizes), depths=list(depths),
        layer_type="basic", downsample_in_first_stage=False, **_labels(num_classes, labels)))


def convnext_tiny(num_classes: FromData[Optional[int]] = None, labels: FromData[Optional[list[str]]] = None,
                  image_size: FromData[Optional[int]] = None, path: Optional[str] = None,
                  patch_size: Annotated[int, Field(ge=1)] = 2, hidden_sizes: Sizes = (24, 48, 96, 192),
                  depths: Sizes = (1, 1, 2, 1), drop_path_rate: Annotated[float, Field(ge=0, lt=1)] = 0.0) -> nn.Module:
    """A ConvNeXt (~0.4M parameters as set; patch 2 for small images); `path`: a pretrained one instead."""
    if path:
        return pretrained(path, num_classes, labels, image_size)
    from transformers import ConvNextConfig, ConvNextForImageClassification

    _same_length(hidden_sizes, depths)
    return ConvNextForImageClassification(ConvNextConfig(
        num_channels=3, patch_size=patch_size, hidden_sizes=list(hidden_sizes), depths=list(depths),
        num_stages=len(depths), drop_path_rate=drop_path_rate, image_size=image_size or 224,
        **_labels(num_classes, labels)))


def vit_tiny(num_classes: FromData[Optional[int]] = None, labels: FromData[Optional[list[str]]] = None,
             image_size: FromData[Optional[int]] = None, path: Optional[str] = None,
             patch_size: Annotated[int, Field(ge=1)] = 4, hidden_size: Annotated[int, Field(ge=1)] = 64,
             num_hidden_layers: Annotated[int, Field(ge=1)] = 4, num_attention_heads: Annotated[int, Field(ge=1)] = 4,
             intermediate_size: Annotated[int, Field(ge=1)] = 128,
             dropout: Annotated[float, Field(ge=0, lt=1)] = 0.0) -> nn.Module:
    """A Vision Transformer (~0.2M parameters as set); `path`: a pretrained one instead."""
    if path:
        return pretrained(path, num_classes, labels, image_size)
    from transformers import ViTConfig, ViTForImageClassification

    if image_size is None or image_size % patch_size:
        raise UserError(f"model.patch_size={patch_size} must divide data.image_size={image_size}")
    if hidden_size % num_attention_heads:
        raise UserError(f"model.hidden_size={hidden_size} is not a multiple of model.num_attention_heads="
                        f"{num_attention_heads}")
    return ViTForImageClassification(ViTConfig(
        image_size=image_size, patch_size=patch_size, num_channels=3, hidden_size=hidden_size,
        num_hidden_layers=num_hidden_layers, num_attention_heads=num_attention_heads,
        intermediate_size=intermediate_size, hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout,
        **_labels(num_classes, labels)))


def _same_length(hidden_sizes: Sizes, depths: Sizes) -> None:
    if len(hidden_sizes) != len(depths):
        raise UserError(f"model.hidden_sizes ({len(hidden_sizes)} stages) and model.depths ({len(depths)}) "
                        "must have one entry per stage")
