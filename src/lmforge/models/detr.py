"""DETR (transformers' `DetrForObjectDetection`) on a small ResNet backbone of transformers' own: built from
a config (no timm, nothing downloaded) or from a Hugging Face DETR directory (`init_from`, a new
class head when the label set differs), and the image processor that an export ships beside it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

from torch import nn

from lmforge.data.contract import FromData
from lmforge.errors import UserError


def _label_names(num_labels: int, labels: Optional[list[str]]) -> dict[str, Any]:
    names = [str(n) for n in labels] if labels and len(labels) == num_labels else [str(i) for i in range(num_labels)]
    return {"num_labels": num_labels, "id2label": dict(enumerate(names)), "label2id": {n: i for i, n in enumerate(names)}}


def detr(num_labels: FromData[Optional[int]] = None, labels: FromData[Optional[list[str]]] = None,
         path: Optional[str] = None, d_model: int = 64, encoder_layers: int = 2, decoder_layers: int = 2,
         ffn_dim: int = 128, attention_heads: int = 4, num_queries: int = 16, dropout: float = 0.0,
         auxiliary_loss: bool = True, eos_coefficient: float = 0.1, backbone_embedding_size: int = 16,
         backbone_hidden_sizes: tuple[int, ...] = (32, 64, 128), backbone_depths: tuple[int, ...] = (1, 1, 1),
         backbone_layer_type: str = "basic") -> nn.Module:
    """A DETR detector with `num_labels` classes (named `labels`, from the data). From scratch, its ResNet
    backbone has one stage per entry of `backbone_hidden_sizes` (stride 4, then 2 per further stage), and
    the transformer `encoder_layers`/`decoder_layers` of width `d_model` with `num_queries` object slots;
    with `path` (a DETR model directory, e.g. from init_from) its weights, the class head new if needed."""
    from transformers import DetrConfig, DetrForObjectDetection, ResNetConfig

    if num_labels is None or num_labels < 1:
        raise UserError(f"model.num_labels must be >= 1 (it follows the data's categories), got {num_labels!r}")
    names = _label_names(num_labels, labels)
    if path is not None:
        if not (Path(path).expanduser() / "config.json").is_file():
            raise UserError(f"model.path: {path} is not a Hugging Face model directory (no config.json)")
        kind = json.loads((Path(path).expanduser() / "config.json").read_text()).get("model_type")
        if kind != "detr":
            raise UserError(f"model.path: {path} holds a {kind} model, not DETR (model=detr_tiny starts from a "
                            "DETR directory, e.g. an exported detection run)")
        try:
            return DetrForObjectDetection.from_pretrained(str(Path(path).expanduser()), trust_remote_code=False,
                                                          ignore_mismatched_sizes=True, **names)
        except (OSError, ValueError) as exc:
            raise UserError(f"model.path: cannot load a DETR detector from {path} ({str(exc).splitlines()[0]})") from exc
    if len(backbone_hidden_sizes) != len(backbone_depths) or not backbone_depths:
        raise UserError("model.backbone_hidden_sizes and model.backbone_depths must have one entry per stage")
    if d_model % attention_heads:
        raise UserError(f"model.d_model={d_model} is not a multiple of model.attention_heads={attention_heads}")
    backbone = ResNetConfig(num_channels=3, embedding_size=backbone_embedding_size,
                            hidden_sizes=list(backbone_hidden_sizes), depths=list(backbone_depths),
                            layer_type=backbone_layer_type, out_features=[f"stage{len(backbone_depths)}"])
    config = DetrConfig(backbone_config=backbone, use_pretrained_backbone=False, d_model=d_model,
                        encoder_layers=encoder_layers, decoder_layers=decoder_layers, encoder_ffn_dim=ffn_dim,
                        decoder_ffn_dim=ffn_dim, encoder_attention_heads=attention_heads,
                        decoder_attention_heads=attention_heads, num_queries=num_queries, dropout=dropout,
                        auxiliary_loss=auxiliary_loss, eos_coefficient=eos_coefficient, **names)
    model = DetrForObjectDetection(config)
    model.model.unfreeze_backbone()  # DETR freezes a pretrained backbone's first stage; this one learns from zero
    learned_batch_norm(model.model.backbone)
    return model


class LearnedBatchNorm(nn.BatchNorm2d):
    """A batch norm with the frozen one's weights only: no batch counter (unused with a momentum), so its
    state is what the stock class loads, whatever the state dict's version says."""

    def __init__(self, num_features: int) -> None:
        super().__init__(num_features)
        self.num_batches_tracked = None

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, *args) -> None:
        # version 2: the counter is not made up for a state dict without version metadata
        super()._load_from_state_dict(state_dict, prefix, {**local_metadata, "version": 2}, *args)


def learned_batch_norm(module: nn.Module) -> None:
    """Give a backbone learning from zero real batch norm in place of DETR's frozen one (fixed statistics,
    made for pretrained weights). In eval mode a batch norm computes what the frozen one does with the same
    weight, bias and running statistics, so the saved weights load into the stock class unchanged."""
    for name, child in module.named_children():
        if type(child).__name__ == "DetrFrozenBatchNorm2d":
            setattr(module, name, LearnedBatchNorm(child.weight.shape[0]))
        else:
            learned_batch_norm(child)
