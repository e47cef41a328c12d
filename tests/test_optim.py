"""Optimizers and schedules (lmforge.optim): Muon + AdamW as one optimizer under Lightning, its resume,
and learning-rate schedules laid out over the run's budget of steps or time, resumed runs included."""

from __future__ import annotations

import copy
import csv
import functools
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader

from lmforge.errors import UserError
from lmforge.models.causal_lm import gpt2, modern
from lmforge.modules.causal_lm import CausalLMModule
from lmforge.optim import schedules
from lmforge.optim.budget import Budget
from lmforge.optim.muon import Muon, orthogonalize

SHAPE = {"vocab_size": 64, "block_size": 32, "n_layer": 2, "n_head": 2, "n_embd": 32}


class Cycle(L.LightningDataModule):
    """Windows of a repeating token cycle (0, 1, ..., 40, 0, ...): a pattern a tiny LM learns quickly."""

    def __init__(self, n: int = 64, block: int = 16):
        super().__init__()
        ids = torch.arange(n * block + 1) % 41
        self.rows = [{"input_ids": ids[i:i + block], "labels": ids[i + 1:i + block + 1]} for i in range(n)]

    def train_dataloader(self):
        return DataLoader(self.rows, batch_size=8, shuffle=True)

    def val_dataloader(self):
        return DataLoader(self.rows[:16], batch_size=8)


def lm_module(optimizer, scheduler=None, build=modern) -> CausalLMModule:
    torch.manual_seed(0)
    return CausalLMModule(build(**SHAPE), optimizer=optimizer, scheduler=scheduler)


def trainer(tmp_path: Path, name: str, **kw) -> L.Trainer:
    return L.Trainer(accelerator="cpu", devices=1, logger=CSVLogger(tmp_path, name=name, version=""),
                     callbacks=[LearningRateMonitor(logging_interval="step")], enable_progress_bar=False,
                     enable_model_summary=False, num_sanity_val_steps=0, log_every_n_steps=1, **kw)


class StepEnds(L.Callback):
    """When each training step ends, on the clock of Lightning's Timer (time.monotonic)."""

    def __init__(self) -> None:
        self.started = 0.0
        self.ends: list[float] = []

    def on_train_start(self, *args) -> None:
        self.started = time.monotonic()

    def on_train_batch_end(self, *args) -> None:
        self.ends.append(time.monotonic())

    def last_step_stalled(self) -> bool:
        """Whether one of the last two steps took over 3 recent median steps: a stall (a loaded machine)
        after the last step's lr was set (the scheduler sets it as the step before ends, so a stall in
        that step's end hooks counts), which no schedule keyed to time can foresee. Up to that, the
        budget's margin (two steps, at least its recent median step) guarantees the floor."""
        durations = [b - a for a, b in zip(self.ends, self.ends[1:])]
        return max(durations[-2:]) > 3 * statistics.median(durations[-7:])


def logged(tmp_path: Path, name: str, column_start: str) -> list[tuple[int, float]]:
    with open(tmp_path / name / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    column = next(c for c in rows[0] if c.startswith(column_start))
    return [(int(r["step"]), float(r[column])) for r in rows if r.get(column)]


# ---- Muon
def test_newton_schulz_makes_singular_values_near_one() -> None:
    torch.manual_seed(0)
    g = torch.randn(48, 96) @ torch.diag(torch.logspace(-2, 1, 96))  # singular values spread 100x and more
    for matrix in (g, g.T, torch.stack([g, 2 * g])):
        s = torch.linalg.svdvals(orthogonalize(matrix))
        assert s.min() > 0.5 and s.max() < 1.3, s  # the quintic's band, whatever the input's spread
        assert orthogonalize(matrix).dtype == matrix.dtype


def test_muon_orthogonalizes_each_matrix_of_a_stacked_weight() -> None:
    """A [3, rows, cols] weight (the native GPT's fused q/k/v) is three matrices: each moves by an
    orthogonal update of its own, however different their gradients' scales."""
    weight = torch.nn.Parameter(torch.zeros(3, 8, 16))
    weight.grad = torch.randn(3, 8, 16) * torch.tensor([1.0, 100.0, 0.01])[:, None, None]
    Muon([{"params": [weight], "kind": "matrix"}], lr=0.1, momentum=0.0).step()
    for update in -weight.detach() / 0.1:
        s = torch.linalg.svdvals(update)
        assert s.min() > 0.5 and s.max() < 1.3, s


def test_muon_under_lightning_lowers_the_loss_and_keeps_kinds_apart(tmp_path: Path) -> None:
    module = lm_module(functools.partial(Muon, lr=0.02, adam_lr=3e-3, weight_decay=0.01))
    before = copy.deepcopy(module.model.state_dict())
    fit = trainer(tmp_path, "muon", max_steps=40, gradient_clip_val=1.0)
    first = fit.validate(module, datamodule=Cycle(), verbose=False)[0]["val/loss"]
    fit.fit(module, datamodule=Cycle())
    assert fit.callback_metrics["val/loss"] < 0.5 * first
    optimizer = fit.optimizers[0]
    kinds = {g["kind"]: g for g in optimizer.param_groups}
    assert set(kinds) == {"matrix", "head", "embedding", "vector"}
    assert kinds["matrix"]["lr"] == 0.02 and kinds["head"]["lr"] == kinds["vector"]["lr"] == 3e-3
    assert kinds["matrix"]["weight_decay"] == 0.01 and kinds["embedding"]["weight_decay"] == 0.0
    q = module.model.layers[0].attn.qkv
    assert "momentum_buffer" in optimizer.state[q] and "exp_avg" in optimizer.state[module.model.wte.weight]
    assert not torch.equal(before["layers.0.attn.qkv"], q)


def test_muon_adamw_part_is_torch_adamw() -> None:
    """Embeddings, head and vectors follow torch.optim.AdamW exactly; a group without kinds splits by ndim."""
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(5, 3)), torch.nn.Parameter(torch.randn(7))]
    twins = [torch.nn.Parameter(p.detach().clone()) for p in params]
    ours = Muon([{"params": params, "kind": "embedding", "weight_decay": 0.1}], adam_lr=0.01, adam_betas=(0.8, 0.9))
    torch_adamw = torch.optim.AdamW(twins, lr=0.01, betas=(0.8, 0.9), weight_decay=0.1)
    for step in range(5):
        for p, t in zip(params, twins):
            p.grad = torch.randn_like(p) * (step + 1)
            t.grad = p.grad.clone()
        ours.step()
        torch_adamw.step()
    assert all(torch.allclose(p, t, atol=1e-7) for p, t in zip(params, twins))
    split = Muon([torch.nn.Parameter(torch.randn(4, 4)), torch.nn.Parameter(torch.randn(4))])
    assert [g["kind"] for g in split.param_groups] == ["matrix", "vector"]
    with pytest.raises(UserError, match="optimizer.momentum"):
        Muon(params, momentum=1.5)


def test_muon_state_round_trips_for_resume() -> None:
    """3 steps, save, load into a fresh model + optimizer, 3 more == 6 steps straight: bitwise."""
    data = Cycle()
    batches = [torch.stack([r["input_ids"] for r in data.rows[i:i + 8]]) for i in range(0, 48, 8)]

    def run(module, optimizer, steps):
        for ids in steps:
            def closure(ids=ids):
                optimizer.zero_grad()
                loss = module.batch_loss({"input_ids": ids, "labels": (ids + 1) % 41})[0]
                loss.backward()
                return loss
            assert torch.no_grad()(optimizer.step)(closure) is not None  # computes under grad, returns it

    factory = functools.partial(Muon, lr=0.02, adam_lr=3e-3, weight_decay=0.01)
    straight = lm_module(factory)
    opt = factory(straight.parameter_groups())
    run(straight, opt, batches)
    first = lm_module(factory)
    opt = factory(first.parameter_groups())
    run(first, opt, batches[:3])
    saved = copy.deepcopy((first.state_dict(), opt.state_dict()))
    second = lm_module(factory)
    second.load_state_dict(saved[0])
    opt = factory(second.parameter_groups())
    opt.load_state_dict(saved[1])
    run(second, opt, batches[3:])
    assert all(torch.equal(a, b) for a, b in zip(straight.state_dict().values(), second.state_dict().values()))


# ---- schedules over the budget
def lrs(factory, budget: Budget, steps: int) -> list[float]:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = factory(optimizer, budget=budget)
    out = []
    for _ in range(steps):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return out


def test_wsd_warms_up_holds_then_decays_over_the_last_fraction() -> None:
    curve = lrs(functools.partial(schedules.wsd, warmup_steps=10, decay_fraction=0.2), Budget(max_steps=100), 100)
    # Each step's lr is the schedule's value at the end of that step: the last one is at the floor.
    assert curve[0] == 0.1 and curve[9] == 1.0 and curve[78] == curve[79] == 1.0
    assert all(a > b for a, b in zip(curve[79:], curve[80:])) and curve[80] == pytest.approx(0.95)
    assert curve[-1] == pytest.approx(0.0, abs=1e-12)
    sqrt = lrs(functools.partial(schedules.wsd, warmup_steps=0, decay_shape="sqrt", min_lr_ratio=0.1),
               Budget(max_steps=100), 100)
    assert sqrt[89] == pytest.approx(1 - 0.9 * 0.5 ** 0.5) and sqrt[-1] == pytest.approx(0.1)
    # No known end: hold the peak after warmup.
    assert lrs(functools.partial(schedules.wsd, warmup_steps=2), Budget(), 50)[2:] == [1.0] * 48


def test_schedules_follow_time_when_it_ends_first() -> None:
    """30 s of a 60 s budget spent after 10 of 1,000 steps: the fraction is the time's, projected to
    the end of the coming step at the average step time so far (3 s)."""
    clock = iter([30.0, 50.0, 57.0])
    budget = Budget(max_steps=1000, max_seconds=60.0, elapsed=lambda: next(clock))
    # (elapsed + one average step) / (60 s less two average steps)
    assert [budget.fraction(s) for s in (0, 10, 20, 30)] == pytest.approx([0.001, 33 / 54, 52.5 / 55, 1.0])
    # Short steps: the budget is counted at least 2 % short, so the floor comes 2 s before 100 s ends.
    fast = Budget(max_steps=10**6, max_seconds=100.0, elapsed=lambda: 97.0)
    assert fast.fraction(9700) == pytest.approx(97.01 / 98)
    assert Budget(max_steps=10**6, max_seconds=100.0, elapsed=lambda: 98.0).fraction(9800) == 1.0
    def spent(ends: list[float]) -> list[float]:
        """The fraction each step's lr is set at (when the step before ends, at ends[step - 1])."""
        clock = iter(ends)
        budget = Budget(max_steps=10**6, max_seconds=100.0, elapsed=lambda: next(clock))
        return [budget.fraction(step) for step in range(1, len(ends) + 1)]

    # Resumed on a machine five times slower: the run's average (1.6 s) would leave the last step short
    # of the floor (0.998); the recent steps' time (5 s) sets the margin, and it ends at the floor.
    slowed = spent([float(s) for s in range(1, 51)] + [50.0 + 5 * k for k in range(1, 10)])  # to 95 s
    assert slowed[-1] == 1.0 and slowed == sorted(slowed)
    # One slow step (a validation) moves the fraction ahead by its own time only, and it never goes back.
    paused = spent([float(s) for s in range(1, 31)] + [40.0 + s for s in range(1, 31)])
    assert paused == sorted(paused) and paused[-1] == pytest.approx((70 + 69 / 59) / (100 - 2 * 69 / 59))
    # A first step of 30 s (torch.compile compiling) is set-up, not the pace: counted as the average step it
    # pinned the schedule at its end from step 1 on (the lr at its floor for the whole run).
    compiled = spent([30.0] + [30.0 + 0.5 * k for k in range(1, 137)])  # then 0.5 s a step, to 98 s
    assert compiled[:2] == pytest.approx([0.0, 31 / 98], abs=1e-5) and compiled == sorted(compiled) and compiled[-1] == 1.0
    for factory in (schedules.cosine_warmup, schedules.linear_warmup):
        curve = lrs(functools.partial(factory, warmup_steps=0, min_lr_ratio=0.1),
                    Budget(max_steps=10, max_seconds=1.0, elapsed=lambda: 0.0), 10)
        assert 0.9 < curve[0] < 1.0 and curve[9] == pytest.approx(0.1)  # steps end first here
    # With a warmup, the cosine starts where warmup ends (the usual definition): peak, half-way, floor.
    curve = lrs(functools.partial(schedules.cosine_warmup, warmup_steps=10, min_lr_ratio=0.1),
                Budget(max_steps=110), 110)
    assert curve[9] == 1.0 and curve[59] == pytest.approx(0.55) and curve[109] == pytest.approx(0.1)


@pytest.mark.parametrize("limit", ["time", "steps"])
def test_a_limited_run_ends_with_its_lr_decayed(limit: str, tmp_path: Path) -> None:
    wsd = functools.partial(schedules.wsd, warmup_steps=5, decay_fraction=0.5)
    module = lm_module(functools.partial(torch.optim.AdamW, lr=1e-2), wsd, build=gpt2)
    kw = {"max_time": {"seconds": 6}, "max_steps": 100_000} if limit == "time" else {"max_steps": 60}
    fit = trainer(tmp_path, limit, max_epochs=-1, limit_val_batches=0, **kw)
    fit.callbacks.append(steps := StepEnds())
    fit.fit(module, datamodule=Cycle())
    lr = logged(tmp_path, limit, "lr-")
    assert lr[-1][0] == fit.global_step - 1
    # At the floor (0) within a step; only past the decay's middle if a stall (see StepEnds) ended the run.
    assert lr[-1][1] < (0.5 if steps.last_step_stalled() else 0.03) * 1e-2
    # It reached the peak as warmup ended. A loaded machine can spend half the budget (where the decay
    # starts) before the 5 warmup steps end (0.03 s when idle); under 0.9 s it cannot, even counted with
    # the margins: (elapsed + one step) / (6 s - two steps) <= (0.9 + 0.9) / (6 - 1.8) < 0.5.
    peak_step, peak = max(lr, key=lambda row: row[1])
    if steps.ends[4] - steps.started < 0.9:
        assert peak == pytest.approx(1e-2) and peak_step == 4


def test_a_resumed_time_limited_run_continues_its_schedule(tmp_path: Path) -> None:
    """Stopped halfway through an 8 s budget, then resumed: the lr goes on from where it was (Lightning's
    Timer restores the elapsed time) and still ends at the floor."""

    class StopHalfway(L.Callback):
        def on_train_batch_end(self, trainer, *args) -> None:
            timer = next(c for c in trainer.callbacks if type(c).__name__ == "Timer")
            if timer.time_elapsed() > 4.0:
                trainer.should_stop = True

    wsd = functools.partial(schedules.wsd, warmup_steps=5, decay_fraction=0.7, min_lr_ratio=0.1)
    factory = functools.partial(torch.optim.AdamW, lr=1e-2)
    first = trainer(tmp_path, "first", max_time={"seconds": 8}, max_steps=100_000, max_epochs=-1,
                    limit_val_batches=0)
    first.callbacks.append(StopHalfway())
    first.fit(lm_module(factory, wsd), datamodule=Cycle())
    ckpt = tmp_path / "half.ckpt"
    first.save_checkpoint(ckpt)
    before = logged(tmp_path, "first", "lr-")
    assert 0.1e-2 < before[-1][1] < 1e-2  # in the decay, not at its end

    second = trainer(tmp_path, "second", max_time={"seconds": 8}, max_steps=100_000, max_epochs=-1,
                     limit_val_batches=0)
    second.callbacks.append(steps := StepEnds())
    second.fit(lm_module(factory, wsd), datamodule=Cycle(), ckpt_path=str(ckpt))
    after = logged(tmp_path, "second", "lr-")
    assert after[0][0] == before[-1][0] + 1 and after[0][1] <= before[-1][1]  # no second warmup
    assert after[-1][0] == second.global_step - 1
    if steps.last_step_stalled():  # past where the first run stopped, at least
        assert after[-1][1] < 0.1e-2 + 0.5 * 0.9e-2
    else:
        assert after[-1][1] == pytest.approx(0.1e-2, rel=0.05)  # the floor
