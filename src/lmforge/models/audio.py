"""Speech models on `transformers` configs: a wav2vec 2.0 encoder (a convolutional feature encoder over raw
samples, then transformer layers) with a head that follows the data: a classifier over the labels
(`Wav2Vec2ForSequenceClassification`) or a CTC head over the characters of the transcripts
(`Wav2Vec2ForCTC`). Built from scratch at any size, or on the encoder of a model directory (`init_from`:
an lmforge audio run or a Hugging Face wav2vec2-style model) with a new head. They export as stock
`AutoModelForAudioClassification` / `AutoModelForCTC` directories with their feature extractor (and the
CTC tokenizer: a Wav2Vec2Processor), which `transformers.pipeline` runs as they are."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

from pydantic import Field
from torch import nn

from lmforge.data.audio_files import feature_extractor
from lmforge.data.contract import FromData
from lmforge.errors import UserError

Probability = Annotated[float, Field(ge=0, lt=1)]


def wav2vec2(path: Optional[str] = None, num_labels: FromData[Optional[int]] = None,
             labels: FromData[Optional[list[str]]] = None, vocab_size: FromData[Optional[int]] = None,
             sampling_rate: FromData[Optional[int]] = None, hidden_size: int = 64, num_hidden_layers: int = 2,
             num_attention_heads: int = 2, intermediate_size: int = 128,
             conv_dim: tuple[int, ...] = (32, 32, 32, 32, 32, 32, 32),
             conv_stride: tuple[int, ...] = (5, 2, 2, 2, 2, 2, 2),
             conv_kernel: tuple[int, ...] = (10, 3, 3, 3, 3, 2, 2), dropout: Probability = 0.0,
             mask_time_prob: Probability = 0.0, mask_time_length: int = 5,
             mask_feature_prob: Probability = 0.0, mask_feature_length: int = 8) -> nn.Module:
    """A wav2vec 2.0 classifier (the data has `num_labels` labels) or CTC recogniser (the data has a
    vocabulary of `vocab_size` characters). `path`: start from that directory's encoder, its sizes
    kept (the size arguments are for models built from scratch). `mask_time_prob` /
    `mask_feature_prob`: SpecAugment-style masking of spans of frames / feature channels in training
    (the share of frames that start a masked span of `mask_time_length` frames)."""
    from transformers import AutoConfig, AutoModel, Wav2Vec2Config

    if vocab_size is None and num_labels is None:
        raise UserError("model: neither model.num_labels (classification data) nor model.vocab_size (transcribed "
                        "data) is known: use data=audio_folder, or set one of them")
    if sampling_rate is None:
        raise UserError("model.sampling_rate is not set: it follows the data (data.sampling_rate)")
    settings: dict[str, Any] = {
        "mask_time_prob": mask_time_prob, "mask_time_length": mask_time_length, "mask_time_min_masks": 1,
        "mask_feature_prob": mask_feature_prob, "mask_feature_length": mask_feature_length,
        "hidden_dropout": dropout, "attention_dropout": dropout, "activation_dropout": dropout,
        "feat_proj_dropout": dropout, "final_dropout": dropout, "layerdrop": 0.0, "sampling_rate": sampling_rate,
    }
    if vocab_size is not None:  # a CTC head: the blank is the tokenizer's pad token, id 0
        settings.update(vocab_size=vocab_size, pad_token_id=0, ctc_zero_infinity=True, ctc_loss_reduction="mean")
    else:
        names = labels or [str(i) for i in range(num_labels)]
        settings.update(num_labels=num_labels, id2label=dict(enumerate(names)),
                        label2id={name: i for i, name in enumerate(names)})
    if path is None:
        config = Wav2Vec2Config(
            hidden_size=hidden_size, num_hidden_layers=num_hidden_layers, num_attention_heads=num_attention_heads,
            intermediate_size=intermediate_size, conv_dim=tuple(conv_dim), conv_stride=tuple(conv_stride),
            conv_kernel=tuple(conv_kernel), feat_extract_norm="layer", do_stable_layer_norm=True,
            num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4, classifier_proj_size=hidden_size,
            **settings)
        return _with_head(config, ctc=vocab_size is not None)
    source = Path(path).expanduser()
    if not (source / "config.json").is_file():
        raise UserError(f"model.path: {path} is not a model directory (no config.json)")
    try:
        config = AutoConfig.from_pretrained(str(source), trust_remote_code=False)
        config.update(settings)
        model = _with_head(config, ctc=vocab_size is not None)
        encoder = AutoModel.from_pretrained(str(source), config=config, trust_remote_code=False)
        model.base_model.load_state_dict(encoder.state_dict())
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise UserError(f"model.path: cannot load a speech encoder from {path}: {str(exc).splitlines()[0]}") from exc
    return model


def _with_head(config: Any, ctc: bool) -> nn.Module:
    """The model of `config` with a new, randomly initialised head: CTC or a classifier."""
    from transformers import AutoModelForAudioClassification, AutoModelForCTC

    try:
        return (AutoModelForCTC if ctc else AutoModelForAudioClassification).from_config(config)
    except ValueError as exc:  # a model type without such a head
        raise UserError(f"model: {type(config).__name__} has no {'CTC' if ctc else 'audio classification'} "
                        f"head: {str(exc).splitlines()[0]}") from exc


def processor(model: nn.Module, tokenizer: Any = None) -> Any:
    """What an exported speech model ships beside its weights: the feature extractor at the model's rate,
    with the CTC tokenizer as a Wav2Vec2Processor when there is one."""
    from transformers import Wav2Vec2Processor

    extractor = feature_extractor(model.config.sampling_rate)
    return extractor if tokenizer is None else Wav2Vec2Processor(feature_extractor=extractor, tokenizer=tokenizer)
