"""Causal-LM side of pretraining: builders, the Lightning module, generation, export, callbacks.
Real (tiny) models, a real byte tokenizer, real Lightning fits; nothing of lmforge is mocked."""

from __future__ import annotations

import functools
import gc
import json
import math
import os
import statistics
import time
from pathlib import Path
from types import SimpleNamespace

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch the network (set before HF imports)

import lightning as L
import pytest
import torch
import torch.distributed as dist
from torch.distributed.fsdp import FullyShardedDataParallel, ShardingStrategy
from torch.utils.data import DataLoader
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast

from conftest import byte_bpe
from lmforge.callbacks.progress import RichProgressBar
from lmforge.callbacks.samples import TextSamples
from lmforge.callbacks.throughput import Throughput, flops_per_token, matmul_params
from lmforge.data.base import DataModule
from lmforge.errors import UserError
from lmforge.generation import generate, sample_next
from lmforge.models.causal_lm import gpt2, llama, pretrained
from lmforge.models.export import export_hf
from lmforge.modules.causal_lm import CausalLMModule

TEXT = "the quick brown fox jumps over the lazy dog. " * 60 + "héllo wörld 🎉 "


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerFast:
    return byte_bpe()


def tiny_gpt2(vocab: int = 258, **kw) -> torch.nn.Module:
    torch.manual_seed(0)
    return gpt2(vocab_size=vocab, **{"block_size": 64, "n_layer": 2, "n_head": 2, "n_embd": 32, **kw})


def tiny_llama(vocab: int = 258, **kw) -> torch.nn.Module:
    torch.manual_seed(0)
    return llama(vocab_size=vocab, **{"block_size": 64, "n_layer": 2, "n_head": 4, "n_kv_head": 2,
                                      "n_embd": 32, **kw})


class RepeatText(DataModule):
    """Blocks of a repetitive text, labels already shifted, like lmforge.data.text.TextDataModule."""

    def __init__(self, tokenizer, block_size: int = 32, batch_size: int = 8):
        super().__init__()
        self.tokenizer = tokenizer
        ids = torch.tensor(tokenizer.encode(TEXT, add_special_tokens=False))
        self.val_bytes_per_token = len(TEXT.encode()) / len(ids)
        n = (len(ids) - 1) // block_size
        x = ids[: n * block_size].view(n, block_size)
        y = ids[1 : n * block_size + 1].view(n, block_size).clone()
        y[:, :2] = -100  # some ignored positions, as after a document boundary
        self.rows = [{"input_ids": a, "labels": b} for a, b in zip(x, y)]
        self.batch_size = batch_size

    def bytes_per_token(self, stage: str) -> float:
        return self.val_bytes_per_token

    def train_dataloader(self):
        return DataLoader(self.rows, batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self):
        return DataLoader(self.rows[:16], batch_size=self.batch_size)

    def test_dataloader(self):
        return self.val_dataloader()


# ---- builders
def test_builders_shapes_and_tying() -> None:
    g, lm = tiny_gpt2(), tiny_llama()
    x = torch.randint(0, 258, (2, 10))
    assert g(input_ids=x).logits.shape == (2, 10, 258)
    assert lm(input_ids=x).logits.shape == (2, 10, 258)
    assert g.lm_head.weight is g.wte.weight  # GPT-2 ties, Llama does not by default
    assert lm.lm_head.weight is not lm.wte.weight
    assert lm.config.num_key_value_heads == 2 and lm.config.intermediate_size == 128  # 8/3*32 -> 64k
    assert g.config.n_positions == lm.config.max_position_embeddings == 64
    assert any(n.endswith(".bias") for n, _ in g.named_parameters())
    assert not any(n.endswith(".bias") for n, _ in tiny_gpt2(bias=False).named_parameters())
    hf = tiny_gpt2(bias=False, impl="hf")  # the stock class keeps its biases at zero, frozen
    assert type(hf).__name__ == "GPT2LMHeadModel" and hf.config._attn_implementation == "sdpa"
    biases = [p for n, p in hf.named_parameters() if n.endswith(".bias")]
    assert biases and all(not p.requires_grad and not p.any() for p in biases)


def test_builders_reject_bad_input() -> None:
    with pytest.raises(UserError, match="model.vocab_size.*tokenizer"):
        gpt2()
    with pytest.raises(UserError, match="model.n_head"):
        gpt2(vocab_size=100, n_embd=30, n_head=4)
    with pytest.raises(UserError, match="model.n_head"):
        llama(vocab_size=100, n_embd=30, n_head=4)
    with pytest.raises(UserError, match="model.n_kv_head"):
        llama(vocab_size=100, n_head=4, n_kv_head=3)
    with pytest.raises(UserError, match="model.n_layer"):
        llama(vocab_size=100, n_layer=0)
    with pytest.raises(UserError, match="model.impl"):
        gpt2(vocab_size=100, impl="fast")
    with pytest.raises(UserError, match="model.activation"):
        gpt2(vocab_size=100, activation="relu")


# ---- module
@pytest.mark.parametrize("impl", ["native", "hf"])
def test_parameter_groups_decay_matrices_only(impl: str) -> None:
    for model in (tiny_gpt2(impl=impl), tiny_llama(impl=impl)):
        module = CausalLMModule(model, optimizer=functools.partial(torch.optim.AdamW, lr=1e-3, weight_decay=0.1))
        names = {id(p): n for n, p in module.named_parameters()}
        groups = module.parameter_groups()
        decay = {names[id(p)] for g in groups if g["weight_decay"] == 0.1 for p in g["params"]}
        no_decay = {names[id(p)] for g in groups if g["weight_decay"] == 0.0 for p in g["params"]}
        assert decay and no_decay and not decay & no_decay
        assert len(decay) + len(no_decay) == len(names)
        assert not any(n.endswith(".bias") or "ln" in n or "norm" in n or "wte" in n or "wpe" in n
                       or "embed_tokens" in n for n in decay)
        assert any(n.endswith(("c_attn.weight", "q_proj.weight", "attn.qkv")) for n in decay)
        # Each group says what kind of parameter it holds (Muon picks its rule by it).
        kinds = {g["kind"]: {names[id(p)] for p in g["params"]} for g in groups}
        assert all("wte" in n or "wpe" in n or "embed_tokens" in n for n in kinds["embedding"])
        assert all(module.get_parameter(n).ndim == 1 for n in kinds["vector"])
        assert "head" not in kinds if model.config.tie_word_embeddings else kinds["head"] == {"model.lm_head.weight"}
        optimizer = module.configure_optimizers()  # torch's AdamW takes (and ignores) the kind key
        assert sorted({g["weight_decay"] for g in optimizer.param_groups}) == [0.0, 0.1]
    module = CausalLMModule(tiny_gpt2(), optimizer=functools.partial(torch.optim.AdamW, weight_decay=0.1),
                            weight_decay_embeddings=True)
    wte = module.model.wte.weight
    assert any(p is wte for g in module.parameter_groups() if g["weight_decay"] == 0.1 for p in g["params"])


def test_fit_lowers_val_loss_and_logs_metrics(tokenizer, tmp_path: Path) -> None:
    L.seed_everything(0)
    data = RepeatText(tokenizer)
    module = CausalLMModule(tiny_gpt2(vocab=data.dims["vocab_size"]),
                            optimizer=functools.partial(torch.optim.AdamW, lr=3e-3, weight_decay=0.1))
    throughput = Throughput(window=5, warmup_steps=2, peak_flops=1e12)
    samples = TextSamples(every_n_steps=20, prompt="the quick", max_new_tokens=8)
    trainer = L.Trainer(max_steps=60, accelerator="cpu", devices=1, logger=L.pytorch.loggers.TensorBoardLogger(
        tmp_path), callbacks=[throughput, samples], enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, val_check_interval=30, check_val_every_n_epoch=None, num_sanity_val_steps=0, log_every_n_steps=5)
    before = trainer.validate(module, datamodule=data, verbose=False)[0]
    assert before["val/loss"] > 4.0  # about ln(258) = 5.55 at random init
    trainer.fit(module, datamodule=data)
    after = trainer.callback_metrics
    assert after["val/loss"] < 0.5 * before["val/loss"]
    assert math.isclose(after["val/ppl"], math.exp(after["val/loss"]), rel_tol=1e-4)
    assert math.isclose(after["val/bpb"], after["val/loss"] / math.log(2) / data.val_bytes_per_token, rel_tol=1e-4)
    # MFU is the logged rate times the model's FLOPs per token, over the given peak.
    mfu = flops_per_token(module.model, 32) * after["train/tokens_per_sec"] / 1e12
    assert math.isclose(after["train/mfu"], mfu, rel_tol=1e-5) and 0 < mfu < 1
    # Sampled at the first validation (every 30 steps) at or after each multiple of 20, and at the end.
    assert [step for step, _ in samples.samples] == [30, 60]
    # Each sample is the current model's seeded continuation: the last one is the trained model's.
    final = generate(module.model, tokenizer, "the quick", max_new_tokens=8, temperature=samples.temperature,
                     top_k=samples.top_k, seed=samples.seed)
    assert samples.samples[-1][1] == final and len({t for _, t in samples.samples}) > 1
    assert list(tmp_path.rglob("events.out.tfevents*"))
    test = trainer.test(module, datamodule=data, verbose=False)[0]
    assert {"test/loss", "test/ppl", "test/bpb"} <= set(test) and test["test/loss"] < before["val/loss"]


def test_samples_without_validation_follow_the_steps(tokenizer, tmp_path: Path) -> None:
    module = CausalLMModule(tiny_gpt2(), optimizer=functools.partial(torch.optim.AdamW, lr=3e-3))
    samples = TextSamples(every_n_steps=20, prompt="the quick", max_new_tokens=4)
    trainer = L.Trainer(max_steps=50, accelerator="cpu", devices=1, logger=False, callbacks=[samples],
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0, default_root_dir=tmp_path)
    trainer.fit(module, datamodule=RepeatText(tokenizer))
    assert [step for step, _ in samples.samples] == [20, 40, 50]


def test_progress_bar_shows_the_metrics_of_the_last_written_step(tokenizer, tmp_path: Path) -> None:
    """The bar reads metrics only on the steps the loggers write, which are the only steps they change."""

    class Shown(L.Callback):  # what the bar displays after each step, next to what was logged
        def __init__(self):
            self.rows: list[tuple[int, float, float]] = []
            self.steps: list[tuple[int, float]] = []

        def on_train_batch_end(self, trainer, *args) -> None:
            shown = bar._metric_component._metrics
            if "train/loss" in shown:
                self.rows.append((trainer.global_step, float(shown["train/loss"]),
                                  float(trainer.progress_bar_metrics["train/loss"])))
                self.steps.append((trainer.global_step, float(shown["step"])))

    class EveryStep(CausalLMModule):  # also a bar metric logged on every step, as a user's may be
        def training_step(self, batch, batch_idx):
            self.log("step", float(self.trainer.global_step + 1), prog_bar=True, on_step=True, on_epoch=False)
            return super().training_step(batch, batch_idx)

    bar, shown = RichProgressBar(), Shown()
    module = EveryStep(tiny_gpt2(), optimizer=functools.partial(torch.optim.AdamW, lr=3e-3))
    trainer = L.Trainer(max_steps=23, accelerator="cpu", devices=1, logger=False, callbacks=[bar, shown],
                        enable_checkpointing=False, enable_model_summary=False, log_every_n_steps=5,
                        limit_val_batches=0, default_root_dir=tmp_path)
    trainer.fit(module, datamodule=RepeatText(tokenizer))
    assert [step for step, _, _ in shown.rows] == list(range(5, 24))
    assert all(on_bar == pytest.approx(logged, abs=1e-3) for _, on_bar, logged in shown.rows)
    assert len({logged for _, _, logged in shown.rows}) == 5  # steps 5, 10, 15, 20 and the last, 23
    # Between written steps the bar is not read again: it shows the value of the last written step.
    assert shown.steps == [(step, float(23 if step == 23 else step - step % 5)) for step in range(5, 24)]


def _sharded_on_rank(rank: int, rendezvous: str, out: str) -> None:
    """Wrap the tiny GPT-2 in FSDP (FULL_SHARD) on this rank as Lightning does (setup hooks first), then
    sample, count FLOPs and group the parameters; the results go to `out`/{rank}.json."""
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=2)
    try:
        module, throughput = CausalLMModule(tiny_gpt2(), optimizer=functools.partial(torch.optim.AdamW)), Throughput()
        throughput.setup(None, module, "fit")
        module.setup("fit")
        sharded = FullyShardedDataParallel(module, device_id=torch.device("cpu"), use_orig_params=True,  # as Lightning
                                           sharding_strategy=ShardingStrategy.FULL_SHARD)
        samples = TextSamples(prompt="the quick", max_new_tokens=8, tokenizer=byte_bpe())
        trainer = SimpleNamespace(model=sharded, global_step=1, is_global_zero=rank == 0, loggers=[], datamodule=None)
        result = {"sample": samples.sample(trainer, module),
                  "flops": [flops_per_token(module.model, 64, throughput._matmul_params),
                            flops_per_token(module.model, 64)],
                  "groups": {g["kind"]: len(g["params"]) for g in module.parameter_groups()}}
        Path(out, f"{rank}.json").write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()


def test_a_sharded_model_samples_counts_and_groups_as_the_whole_one(tmp_path: Path) -> None:
    """Two ranks, each holding half of every parameter (FSDP FULL_SHARD on CPU; outside FSDP's forward
    the wrapped modules hold only their shard, as flat 1-D views): both sample what the unsharded model
    samples, MFU counts its FLOPs, and its weight matrices stay in the matrix group (weight decay)."""
    torch.multiprocessing.spawn(_sharded_on_rank, args=(str(tmp_path / "rendezvous"), str(tmp_path)), nprocs=2)
    reference, whole = TextSamples(), CausalLMModule(tiny_gpt2())
    expected = generate(whole.model, byte_bpe(), "the quick", max_new_tokens=8, temperature=reference.temperature,
                        top_k=reference.top_k, seed=reference.seed)
    groups = {g["kind"]: len(g["params"]) for g in whole.parameter_groups()}
    for rank in (0, 1):
        result = json.loads((tmp_path / f"{rank}.json").read_text())
        assert result["sample"] == expected
        counted, of_the_shard = result["flops"]
        assert counted == flops_per_token(whole.model, 64) and of_the_shard < counted
        assert result["groups"] == groups and groups["matrix"] > 0


class BatchClock(L.Callback):
    """The test's own count: the time each batch ended and the tokens it held, by optimizer step."""

    def __init__(self):
        self.at: dict[int, tuple[float, int]] = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.at[trainer.global_step] = (time.perf_counter(), batch["input_ids"].numel())


class LoggedValues(L.pytorch.loggers.Logger):
    """Every value the loggers receive, by the step Lightning logs it under."""

    name, version = "values", 0

    def __init__(self):
        super().__init__()
        self.values: dict[int, dict] = {}

    def log_metrics(self, metrics, step=None) -> None:
        self.values.setdefault(step, {}).update(metrics)

    def log_hyperparams(self, params, *args, **kwargs) -> None:
        pass


def test_tokens_per_sec_agrees_with_an_independent_count(tokenizer) -> None:
    """Each logged rate equals the tokens of the last `window` batches over the time since the batch
    before them, counted by the test's own clocks, called just before and just after the callback's: the
    rate lies between the two clocks' rates (a busy machine can pause a process between two reads)."""
    L.seed_everything(0)
    data = RepeatText(tokenizer, batch_size=5)  # 84 rows: a short last batch, so batches differ in size
    module = CausalLMModule(tiny_gpt2(vocab=data.dims["vocab_size"]), optimizer=functools.partial(torch.optim.AdamW))
    clock, after, logged = BatchClock(), BatchClock(), LoggedValues()
    window, warmup = 4, 2
    trainer = L.Trainer(max_steps=24, accelerator="cpu", devices=1, logger=logged, limit_val_batches=0,
                        callbacks=[clock, Throughput(window=window, warmup_steps=warmup), after], log_every_n_steps=3,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    gc.disable()  # a collection between two reads would widen the bracket by milliseconds
    try:
        trainer.fit(module, datamodule=data)
    finally:
        gc.enable()
    # Lightning logs a step's metrics under the number of steps before it.
    rates = {step + 1: v["train/tokens_per_sec"] for step, v in logged.values.items() if "train/tokens_per_sec" in v}
    checked = [s for s in rates if s > warmup + window]  # full windows
    assert len(checked) >= 5 and all(s % 3 == 0 for s in rates)
    sizes, tightness = set(), []
    for step in checked:
        start = clock.at[step - window][0]
        tokens = sum(clock.at[s][1] for s in range(step - window + 1, step + 1))
        sizes |= {clock.at[s][1] for s in range(step - window, step + 1)}
        longest, shortest = after.at[step][0] - start, clock.at[step][0] - after.at[step - window][0]
        assert tokens / longest <= rates[step] <= tokens / shortest, step
        tightness.append(shortest / longest)
    assert len(sizes) > 1  # the rate is summed over batches, not a batch size times a count
    assert statistics.median(tightness) > 0.9  # the clocks bracket each rate within ~3 % (the log call)


def test_flops_per_token_counts_matmuls() -> None:
    g = tiny_gpt2()
    n = sum(p.numel() for p in g.parameters()) - g.wpe.weight.numel()  # tied head counts once
    assert matmul_params(g) == n
    assert flops_per_token(g, 64) == 6 * n + 12 * 2 * 32 * 64


# ---- generation
def test_generate_greedy_stream_topk(tokenizer) -> None:
    model = tiny_gpt2()
    pieces: list[str] = []
    out = generate(model, tokenizer, "héllo", max_new_tokens=20, temperature=0.0, stream=pieces.append)
    assert out == "".join(pieces) and model.training  # train mode restored
    assert all("\ufffd" not in p for p in pieces[:-1])
    assert generate(model, tokenizer, "héllo", max_new_tokens=20, temperature=0.0) == out
    assert generate(model, tokenizer, "héllo", max_new_tokens=20, temperature=1.0, top_k=1) == out
    # top_p reaches the sampler: a nucleus this small holds the argmax only, so sampling is greedy.
    assert generate(model, tokenizer, "héllo", max_new_tokens=20, temperature=1.0, top_p=1e-6, seed=3) == out
    sampled = generate(model, tokenizer, "héllo", max_new_tokens=20, top_p=0.9, seed=3)
    assert sampled != out and sampled == generate(model, tokenizer, "héllo", max_new_tokens=20, top_p=0.9, seed=3)
    # A prompt longer than the model's 64 positions is cropped to its last 64 tokens, on every step.
    llama_model = tiny_llama()
    long = generate(llama_model, tokenizer, "y" * 100, max_new_tokens=30, temperature=0.0)
    assert long == generate(llama_model, tokenizer, "y" * 64, max_new_tokens=30, temperature=0.0)
    assert len(tokenizer.encode(long, add_special_tokens=False)) >= 30  # slid past the limit, no eos (bytes that
    # are no UTF-8 decode to U+FFFD, which encodes to 3 tokens)
    # An empty prompt starts a fresh document: it continues the bos (here eos) token; `seed` seeds the draw.
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([[tokenizer.eos_token_id]])).logits[0, -1]
    first = sample_next(logits, generator=torch.Generator().manual_seed(0))
    assert first != tokenizer.eos_token_id
    assert generate(model, tokenizer, "", max_new_tokens=1, seed=0) == tokenizer.decode([first])


def test_top_p_drops_a_token_that_top_k_keeps() -> None:
    """Probabilities 0.5, 0.3, 0.15, 0.05: top_k=3 keeps token 2; top_p=0.7 drops it (0.5 + 0.3 before it)."""
    logits = torch.tensor([0.5, 0.3, 0.15, 0.05]).log()

    def counts(**kw) -> list[int]:
        generator = torch.Generator().manual_seed(0)
        drawn = [sample_next(logits, generator=generator, **kw) for _ in range(2000)]
        return [drawn.count(token) for token in range(4)]

    top_k = counts(top_k=3)
    assert top_k[3] == 0 and top_k[2] > 200  # about 0.15 / 0.95 of 2000 = 316
    both = counts(top_k=3, top_p=0.7)
    assert both[2] == both[3] == 0 and both[0] > 1000 and both[1] > 500  # 0.5 / 0.8 and 0.3 / 0.8 of 2000
    assert counts(top_p=0.7) == both


def test_generate_cache_matches_recomputing(tokenizer) -> None:
    """The KV-cached loop gives what recomputing the (cropped) context each step gives, also past 64 positions."""
    for model in (tiny_gpt2().eval(), tiny_llama().eval()):
        ids, new = tokenizer.encode("y" * 40, add_special_tokens=False), []
        with torch.no_grad():
            for _ in range(30):
                new.append(int(model(input_ids=torch.tensor([(ids + new)[-64:]])).logits[0, -1].argmax()))
        assert tokenizer.eos_token_id not in new
        assert generate(model, tokenizer, "y" * 40, max_new_tokens=30, temperature=0.0) == tokenizer.decode(new)


def test_generate_stops_at_eos(tokenizer) -> None:
    model = tiny_gpt2()
    with torch.no_grad():  # the final norm outputs v whatever the input, and only eos's row points along v
        v = torch.randn(model.norm.bias.shape)
        model.norm.weight.zero_()
        model.norm.bias.copy_(v)
        model.lm_head.weight[tokenizer.eos_token_id] = 50 * v
    assert generate(model, tokenizer, "abc", max_new_tokens=10, temperature=0.0) == ""


# ---- export
@pytest.mark.parametrize("build", [tiny_gpt2, tiny_llama])
def test_export_reloads_with_same_logits(build, tokenizer, tmp_path: Path) -> None:
    model = build().eval()
    out = export_hf(model, tokenizer, tmp_path / "hf", generation={"temperature": 0.7, "top_k": 20})
    again = AutoModelForCausalLM.from_pretrained(out).eval()
    tok = AutoTokenizer.from_pretrained(out)
    ids = torch.tensor([tok.encode(TEXT[:50], add_special_tokens=False)])
    assert ids.tolist() == [tokenizer.encode(TEXT[:50], add_special_tokens=False)]
    with torch.no_grad():
        assert torch.allclose(model(input_ids=ids).logits, again(input_ids=ids).logits, atol=1e-6)
    gen = json.loads((out / "generation_config.json").read_text())
    assert gen["eos_token_id"] == tokenizer.eos_token_id and gen["pad_token_id"] == tokenizer.pad_token_id
    assert gen["temperature"] == 0.7 and gen["do_sample"] is True
    with torch.no_grad():
        assert torch.allclose(model(input_ids=ids).logits, pretrained(str(out))(input_ids=ids).logits, atol=1e-6)
    with pytest.raises(UserError, match="model.path"):
        pretrained(str(tmp_path / "missing"))
    assert export_hf(model, tokenizer, out) == out  # replacing a previous export is fine
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "todo.txt").write_text("mine")
    with pytest.raises(UserError, match="export_dir"):
        export_hf(model, tokenizer, foreign)
    assert (foreign / "todo.txt").read_text() == "mine" and not list(tmp_path.glob(".*tmp*"))


def test_export_merges_lora_and_saves_classifiers(tokenizer, tmp_path: Path) -> None:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForSequenceClassification, GPT2ForSequenceClassification

    lora = get_peft_model(tiny_gpt2(impl="hf"), LoraConfig(r=4, target_modules=["c_attn"], fan_in_fan_out=True))
    with torch.no_grad():
        for name, p in lora.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)  # non-zero adapters, so merging matters
    lora.eval()
    ids = torch.randint(0, 256, (1, 12))
    with torch.no_grad():
        expected = lora(input_ids=ids).logits
    out = export_hf(lora, tokenizer, tmp_path / "lora")
    again = AutoModelForCausalLM.from_pretrained(out).eval()
    assert not any("lora" in n for n, _ in again.named_parameters())
    with torch.no_grad():
        assert torch.allclose(expected, again(input_ids=ids).logits, atol=1e-5)

    torch.manual_seed(0)
    classifier = GPT2ForSequenceClassification(tiny_gpt2().config.__class__(
        vocab_size=258, n_positions=64, n_layer=1, n_head=2, n_embd=32, num_labels=3)).eval()
    out = export_hf(classifier, tokenizer, tmp_path / "cls")
    again = AutoModelForSequenceClassification.from_pretrained(out).eval()
    assert again.config.pad_token_id == tokenizer.pad_token_id
    with torch.no_grad():
        assert torch.allclose(classifier(input_ids=ids).logits, again(input_ids=ids).logits, atol=1e-6)
