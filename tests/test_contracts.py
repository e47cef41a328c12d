"""The declared contracts (models/contract.py, data/contract.py, tokenizers/contract.py): every shipped
model preset satisfies its own, and an object missing a declared part is refused in one line when built."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import pytest
import torch
from hydra.utils import get_object
from omegaconf import OmegaConf
from torch import nn

from conftest import byte_bpe, cli, one_line_error
from lmforge.data.base import DataModule
from lmforge.data.classification import ClassificationDataModule
from lmforge.data.contract import DIMS, FromData, data_parameters
from lmforge.errors import UserError
from lmforge.experiment.build import build_model, build_module, fill_nulls
from lmforge.generation import generate
from lmforge.models.contract import Exportable, LanguageModel, context_length, input_embeddings
from lmforge.models.export import export_hf, plain_model

CONF = Path(__file__).parent.parent / "conf"
PRESETS = sorted(p.stem for p in (CONF / "model").glob("*.yaml"))
SHRINK = {"n_layer": 1, "n_embd": 32, "n_head": 2, "n_kv_head": 2, "block_size": 24, "intermediate_size": 64}  # fast to build; same classes
DATA = {"vocab_size": 258, "input_size": 64, "num_classes": 10, "num_labels": 2, "labels": ["neg", "pos"],
        "image_size": 32}
IMAGE_MODELS = ("resnet_small", "convnext_tiny", "vit_tiny")  # built from a config; `path` only for init_from


def preset(name: str, model_dir: Path) -> dict:
    """The model node of conf/model/<name>.yaml, shrunk, with what the data and init_from would fill."""
    node = OmegaConf.to_container(OmegaConf.load(CONF / "model" / f"{name}.yaml"))
    node.update({k: v for k, v in SHRINK.items() if node.get(k) is not None})
    if "path" in node and name not in IMAGE_MODELS:
        node["path"] = str(model_dir)
    return fill_nulls(node, DATA)


@pytest.mark.parametrize("name", PRESETS)
def test_every_model_preset_satisfies_its_contract(name: str, tiny_hf_lm: Path) -> None:
    node = preset(name, tiny_hf_lm)
    follows = data_parameters(get_object(node["_target_"]))
    assert follows and follows <= set(DIMS), follows  # the sizes it takes from the data, all declared ones
    if name == "wav2vec2_tiny":  # raw audio in, from scratch: no token embeddings, no context, a stock class
        model = build_model({"model": {**node, "path": None, "sampling_rate": 16000}})
        assert input_embeddings(model) is None and context_length(model) is None
        assert isinstance(plain_model(model), Exportable)
        return
    if name == "detr_tiny":  # an image model built from its config (path: a DETR directory, not the tiny LM)
        node["path"] = None
    model = build_model({"model": node})
    assert isinstance(model, nn.Module)
    if name == "detr_tiny":  # no token table, no context limit; exportable as it is
        assert input_embeddings(model) is None and context_length(model) is None
        assert isinstance(plain_model(model), Exportable)
        return
    if name == "mlp":  # no tokens, no context limit, no transformers class: refused by export in one line
        assert input_embeddings(model) is None and context_length(model) is None
        with pytest.raises(UserError, match="MLP is not a Hugging Face transformers model"):
            plain_model(model)
        return
    if name in IMAGE_MODELS:  # pixels in: no token embedding, no context limit; a stock class, exportable
        assert input_embeddings(model) is None and context_length(model) is None
        assert isinstance(plain_model(model), Exportable)
        return
    assert input_embeddings(model).num_embeddings >= DATA["vocab_size"]
    assert isinstance(context_length(model), int) and context_length(model) > 0
    assert isinstance(plain_model(model), Exportable)
    if name != "hf_classifier":
        assert isinstance(model, LanguageModel)
        assert context_length(model) == node.get("block_size", context_length(model))
        assert model.get_output_embeddings().weight.shape[0] >= DATA["vocab_size"]


def test_generation_keeps_within_the_declared_context(tiny_hf_lm: Path) -> None:
    """Generation crops the context to the length the model declares (the rule the builder checks too)."""
    model = build_model({"model": preset("gpt2_tiny", tiny_hf_lm)})
    tok = byte_bpe()
    text = generate(model, tok, "x" * 40, max_new_tokens=30, temperature=0.0)  # 70 tokens > 24 positions
    assert isinstance(text, str)
    with pytest.raises(UserError, match="is larger than the model's 24 positions"):
        build_module({"model": preset("gpt2_tiny", tiny_hf_lm), "module": {
            "_target_": "lmforge.modules.causal_lm.CausalLMModule"}}, _WideText())


class _WideText(DataModule):
    """A text data module whose windows (64 tokens) exceed a 24-position model."""

    tokenizer = byte_bpe()

    @property
    def context_length(self) -> int:
        return 64


class _UndeclaredSize(DataModule):
    """A data module that names a size no model parameter follows (a typo of num_classes)."""

    @property
    def dims(self) -> dict:
        return {"input_size": 64, "n_classes": 10}


def test_a_data_module_naming_an_undeclared_size_is_refused(tiny_hf_lm: Path) -> None:
    config = {"model": preset("mlp", tiny_hf_lm), "module": {"_target_": "lmforge.modules.classifier.ClassifierModule"}}
    with pytest.raises(UserError, match=r"_UndeclaredSize.dims names n_classes, which no model parameter follows"):
        build_module(config, _UndeclaredSize())


def test_a_tokenizer_missing_its_special_tokens_is_refused(tmp_path: Path) -> None:
    """A bare `tokenizers.Tokenizer` (no special-token ids, no save_pretrained) is no usable tokenizer."""
    data = ClassificationDataModule(max_length=16)
    with pytest.raises(UserError) as caught:
        data.set_tokenizer(byte_bpe().backend_tokenizer)
    message = str(caught.value)
    assert message.startswith("init_from: Tokenizer is not a usable tokenizer")
    assert "bos_token_id" in message and "save_pretrained" in message and "\n" not in message
    data.set_tokenizer(byte_bpe())  # a transformers tokenizer has every part
    assert data.tokenizer.pad_token_id is not None


def test_a_model_target_that_builds_no_torch_module_is_refused(tmp_path: Path) -> None:
    proc = cli("train", "experiment=mnist_mlp", "data.download=false", "model._target_=collections.OrderedDict",
               cwd=tmp_path)
    assert one_line_error(proc) == ("error: config key 'model._target_' built a OrderedDict, "
                                    "not a torch.nn.Module")


def test_export_refuses_a_model_that_is_no_transformers_model(tmp_path: Path) -> None:
    from lmforge.models.mlp import MLP

    with pytest.raises(UserError, match="MLP is not a Hugging Face transformers model"):
        export_hf(MLP(input_size=4, num_classes=2), byte_bpe(), tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert torch.is_tensor(MLP(input_size=4, num_classes=2)(torch.zeros(1, 4)))


@pytest.mark.parametrize("optimizer, refused", [("lmforge.optim.muon.Muon", True), ("torch.optim.AdamW", False)])
def test_an_optimizer_of_whole_matrices_is_refused_under_fsdp(optimizer: str, refused: bool) -> None:
    """Muon declares itself a WholeMatrixOptimizer: FSDP's shards are refused for it, not for AdamW."""
    from lmforge.experiment.build import check_optimizer

    config = {"optimizer": {"_target_": optimizer, "_partial_": True, "weight_decay": 0.1},
              "trainer": {"strategy": {"_target_": "lightning.pytorch.strategies.FSDPStrategy"}}}
    if refused:
        with pytest.raises(UserError, match="optimizer Muon updates each weight matrix as a whole"):
            check_optimizer(config)
    else:
        check_optimizer(config)
    with pytest.raises(UserError, match=r"set optimizer._partial_=true\), got a dict"):
        check_optimizer({"optimizer": {"_target_": "builtins.dict", "lr": 0.1}, "trainer": {}})


def test_image_and_audio_models_fit_the_model_contract(tmp_path: Path) -> None:
    """A transformers image classifier and a CTC speech model: no token table, no context length, no LM
    head, and exportable as they are: the builders, throughput and export need no special case for them."""
    from transformers import ViTConfig, ViTForImageClassification, Wav2Vec2Config, Wav2Vec2ForCTC

    from lmforge.callbacks.throughput import flops_per_token
    from lmforge.models.contract import output_layer

    vit = ViTForImageClassification(ViTConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                              intermediate_size=32, image_size=8, patch_size=4, num_labels=3))
    ctc = Wav2Vec2ForCTC(Wav2Vec2Config(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                        intermediate_size=32, conv_dim=(8, 8), conv_stride=(5, 2), conv_kernel=(10, 3),
                                        num_conv_pos_embeddings=4, num_conv_pos_embedding_groups=2, vocab_size=12))
    for model in (vit, ctc):
        assert input_embeddings(model) is None and context_length(model) is None and output_layer(model) is None
        assert isinstance(plain_model(model), Exportable)
        assert flops_per_token(model, 10) > 6 * 16 * 16



class OwnModel(nn.Module):
    """A model of one's own: it declares its context length and which size follows the data."""

    context_length = 16

    def __init__(self, vocab_size: FromData[Optional[int]] = None, n_classes: Optional[int] = None) -> None:
        super().__init__()
        self.n_classes = n_classes  # named like a size, but not marked FromData: left as given
        self.embedding = nn.Embedding(vocab_size, 4)


def test_a_model_of_ones_own_declares_its_context_and_its_data_sizes() -> None:
    model = build_model({"model": fill_nulls({"_target_": f"{__name__}.OwnModel"}, {"vocab_size": 7, "n_classes": 3})})
    assert model.embedding.num_embeddings == 7 and model.n_classes is None and context_length(model) == 16
    with pytest.raises(UserError, match="data.block_size=64 is larger than the model's 16 positions"):
        build_module({"model": {"_target_": f"{__name__}.OwnModel"},
                      "module": {"_target_": "lmforge.modules.causal_lm.CausalLMModule"}}, _WideText())
