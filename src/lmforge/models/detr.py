"""DETR-family detectors of transformers (`DetrForObjectDetection`, `ConditionalDetrForObjectDetection`) on
a small ResNet backbone of transformers' own: built from a config (no timm, nothing downloaded) or from a
Hugging Face directory of either (`init_from`, a new class head when the label set differs); their
detections as the family's image processor computes them, and that processor for an export."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal, Optional

from torch import nn

from lmforge.data.contract import FromData
from lmforge.errors import UserError

# model_type -> transformers' config, model and (Pillow) image processor classes. DETR scores each query's
# classes with a softmax beside a no-object class; Conditional DETR (learns several times faster) scores each
# class with a sigmoid (focal loss), and its detections are the best (query, class) pairs.
FAMILIES = {
    "detr": ("DetrConfig", "DetrForObjectDetection", "DetrImageProcessorPil"),
    "conditional_detr": ("ConditionalDetrConfig", "ConditionalDetrForObjectDetection",
                         "ConditionalDetrImageProcessorPil"),
}


def _label_names(num_labels: int, labels: Optional[list[str]]) -> dict[str, Any]:
    names = [str(n) for n in labels] if labels and len(labels) == num_labels else [str(i) for i in range(num_labels)]
    return {"num_labels": num_labels, "id2label": dict(enumerate(names)), "label2id": {n: i for i, n in enumerate(names)}}


def _classes(family: str) -> list[Any]:
    """The family's config, model and image processor classes."""
    import transformers

    return [getattr(transformers, name) for name in FAMILIES[family]]  # getattr: the names of the table above


def detr(num_labels: FromData[Optional[int]] = None, labels: FromData[Optional[list[str]]] = None,
         path: Optional[str] = None, family: Literal["detr", "conditional_detr"] = "detr",
         d_model: int = 64, encoder_layers: int = 2, decoder_layers: int = 2,
         ffn_dim: int = 128, attention_heads: int = 4, num_queries: int = 16, dropout: float = 0.0,
         auxiliary_loss: bool = True, eos_coefficient: float = 0.1, backbone_embedding_size: int = 16,
         backbone_hidden_sizes: tuple[int, ...] = (32, 64, 128), backbone_depths: tuple[int, ...] = (1, 1, 1),
         backbone_layer_type: str = "basic") -> nn.Module:
    """A detector of the DETR `family` with `num_labels` classes (named `labels`, from the data). From
    scratch, its ResNet backbone has one stage per entry of `backbone_hidden_sizes` (stride 4, then 2 per
    further stage), and the transformer `encoder_layers`/`decoder_layers` of width `d_model` with
    `num_queries` object slots; with `path` (a model directory of either family, e.g. from init_from) its
    family and weights, the class head new if needed. `eos_coefficient` weighs DETR's no-object class."""
    from transformers import ResNetConfig

    if num_labels is None or num_labels < 1:
        raise UserError(f"model.num_labels must be >= 1 (it follows the data's categories), got {num_labels!r}")
    names = _label_names(num_labels, labels)
    if path is not None:
        if not (Path(path).expanduser() / "config.json").is_file():
            raise UserError(f"model.path: {path} is not a Hugging Face model directory (no config.json)")
        kind = json.loads((Path(path).expanduser() / "config.json").read_text()).get("model_type")
        if kind not in FAMILIES:
            raise UserError(f"model.path: {path} holds a {kind} model, not one of {', '.join(FAMILIES)} (a "
                            "detection model starts from a directory of its family, e.g. an exported detection run)")
        try:
            return _classes(kind)[1].from_pretrained(str(Path(path).expanduser()), trust_remote_code=False,
                                                     ignore_mismatched_sizes=True, **names)
        except (OSError, ValueError) as exc:
            raise UserError(f"model.path: cannot load a {kind} detector from {path} ({str(exc).splitlines()[0]})") from exc
    if family not in FAMILIES:
        raise UserError(f"model.family: {family!r} is not one of {', '.join(FAMILIES)}")
    if len(backbone_hidden_sizes) != len(backbone_depths) or not backbone_depths:
        raise UserError("model.backbone_hidden_sizes and model.backbone_depths must have one entry per stage")
    if d_model % attention_heads:
        raise UserError(f"model.d_model={d_model} is not a multiple of model.attention_heads={attention_heads}")
    backbone = ResNetConfig(num_channels=3, embedding_size=backbone_embedding_size,
                            hidden_sizes=list(backbone_hidden_sizes), depths=list(backbone_depths),
                            layer_type=backbone_layer_type, out_features=[f"stage{len(backbone_depths)}"])
    config_class, model_class, _ = _classes(family)
    own = {"eos_coefficient": eos_coefficient} if family == "detr" else {}
    config = config_class(backbone_config=backbone, use_pretrained_backbone=False, d_model=d_model,
                          encoder_layers=encoder_layers, decoder_layers=decoder_layers, encoder_ffn_dim=ffn_dim,
                          decoder_ffn_dim=ffn_dim, encoder_attention_heads=attention_heads,
                          decoder_attention_heads=attention_heads, num_queries=num_queries, dropout=dropout,
                          auxiliary_loss=auxiliary_loss, **own, **names)
    model = model_class(config)
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
        if type(child).__name__.endswith("DetrFrozenBatchNorm2d"):  # either family's
            setattr(module, name, LearnedBatchNorm(child.weight.shape[0]))
        else:
            learned_batch_norm(child)


def detections(model: nn.Module, logits: Any, pred_boxes: Any, sizes: Any, top_k: int = 100) -> list[dict[str, Any]]:
    """Per image, the detections that the family's `post_process_object_detection` gives at no threshold,
    as xyxy boxes in the original image's pixels (`sizes`: [B, 2] height, width). DETR: one a query, its
    best real class (softmax without the no-object class). Conditional DETR: the `top_k` best (query,
    class) pairs by sigmoid probability, best first."""
    import torch

    cx, cy, w, h = pred_boxes.float().unbind(-1)
    corners = torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], -1)
    height, width = sizes.float().unbind(-1)
    corners = corners * torch.stack([width, height, width, height], -1)[:, None, :]
    if model.config.model_type == "detr":
        scores, labels = logits.float().softmax(-1)[..., :-1].max(-1)
    else:
        probabilities = logits.float().sigmoid().flatten(1)
        scores, pairs = probabilities.topk(min(top_k, probabilities.shape[1]), dim=1)
        queries, labels = pairs.div(logits.shape[-1], rounding_mode="floor"), pairs % logits.shape[-1]
        corners = corners.gather(1, queries[..., None].expand(-1, -1, 4))
    return [{"boxes": b, "scores": s, "labels": lab} for b, s, lab in zip(corners, scores, labels)]


def image_processor(model: nn.Module, processor: Any) -> Any:
    """`processor` (the data's, DETR's class) as the model's family's class with the same settings: the
    pipeline post-processes with it."""
    family_class = _classes(model.config.model_type)[2]
    return processor if isinstance(processor, family_class) else family_class(**processor.to_dict())
