"""What the builders, callbacks, generation and export need of a model, declared once.

Every model is a `torch.nn.Module`; the rest is optional, each part a Protocol checked with isinstance:
a model over token ids has input embeddings, a language model also an output layer, a model built on a
`transformers` config declares its sizes there, and an exportable model saves itself as a `transformers`
model directory. Image and audio models (classifiers, detectors, CTC) fit as they are: a model without
token embeddings is not checked against a tokenizer, one without a context length has no window limit.
"""

from __future__ import annotations

from typing import Any, Optional, Protocol, runtime_checkable

from torch import nn

from lmforge.errors import UserError

COMPILED_PREFIX = "_orig_mod."  # what torch.compile's wrapper adds to every state-dict key


@runtime_checkable
class Configured(Protocol):
    """A model built on a `transformers` config (`PretrainedConfig`): its sizes are read there."""

    config: Any


@runtime_checkable
class DeclaresContext(Protocol):
    """A model of its own (no `transformers` config) that states its longest sequence; None: no limit."""

    context_length: Optional[int]


@runtime_checkable
class TokenModel(Protocol):
    """A model with an input layer (every `transformers` model): when that is an `nn.Embedding`, the model
    reads token ids and the embedding bounds the ids the tokenizer may produce."""

    def get_input_embeddings(self) -> Optional[nn.Module]: ...


@runtime_checkable
class LanguageModel(TokenModel, Protocol):
    """A model over token ids with an output layer over the vocabulary (None when it has none)."""

    def get_output_embeddings(self) -> Optional[nn.Module]: ...


@runtime_checkable
class Exportable(Configured, Protocol):
    """A model that saves itself as a `transformers` model directory loadable by an Auto class."""

    def save_pretrained(self, save_directory: Any, **kwargs: Any) -> Any: ...

    def can_generate(self) -> bool: ...


@runtime_checkable
class ConvertsForExport(Protocol):
    """A model of its own (lmforge's native GPT) that converts to its stock `transformers` class."""

    def to_hf(self) -> Exportable: ...


@runtime_checkable
class RefusesExport(Protocol):
    """A model that says why it cannot be exported (the line `export` shows)."""

    not_exportable: str


def check_model(model: Any, key: str = "model") -> nn.Module:
    """`model` itself when it is a torch module; otherwise one line naming the config key."""
    if not isinstance(model, nn.Module):
        raise UserError(f"config key '{key}._target_' built a {type(model).__name__}, not a torch.nn.Module")
    return model


def unwrap(model: nn.Module) -> nn.Module:
    """The model itself, also when torch.compile wrapped it (to read its parts, or run it uncompiled)."""
    # torch.compile's wrapper (a class with no public name) keeps the model as `_orig_mod`
    return getattr(model, "_orig_mod", model)


def plain_key(key: str) -> str:
    """A state-dict key as the unwrapped model names it (without torch.compile's prefix)."""
    return key.replace(COMPILED_PREFIX, "")


def context_length(model: nn.Module) -> Optional[int]:
    """The longest sequence the model accepts: the one it declares, else its config's positions; None when
    it has no such limit (an image or audio model, the MLP). GPT-2-style configs call it n_positions."""
    model = unwrap(model)
    if isinstance(model, DeclaresContext):
        return model.context_length
    if not isinstance(model, Configured):
        return None
    # optional keys of a third-party config: only sequence models have them
    positions = getattr(model.config, "max_position_embeddings", None) or getattr(model.config, "n_positions", None)
    return positions if isinstance(positions, int) else None


def config_size(model: nn.Module, name: str) -> int:
    """A size from the model's `transformers` config (hidden_size, num_hidden_layers...): 0 without one."""
    model = unwrap(model)
    # an optional key of a third-party config: not every architecture has each size
    value = getattr(model.config, name, 0) if isinstance(model, Configured) else 0
    return value if isinstance(value, int) else 0


def output_layer(model: nn.Module) -> Optional[nn.Module]:
    """The model's output layer over the vocabulary (an LM head), None for other models."""
    model = unwrap(model)
    if not isinstance(model, LanguageModel):
        return None
    try:
        return model.get_output_embeddings()
    except NotImplementedError:  # as for input embeddings: transformers' "this model has none"
        return None


def input_embeddings(model: nn.Module) -> Optional[nn.Embedding]:
    """The model's token embedding, None for a model that does not read token ids (an image or audio
    model's input layer, e.g. ViT's patch projection, is no table of token ids)."""
    model = unwrap(model)
    if not isinstance(model, TokenModel):
        return None
    try:
        embeddings = model.get_input_embeddings()
    except NotImplementedError:  # how transformers says a model (wav2vec2: audio in) has no such layer
        return None
    return embeddings if isinstance(embeddings, nn.Embedding) else None
