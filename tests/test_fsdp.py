"""`lmforge train trainer=fsdp` end to end on two CPU processes (tests/cpu_fsdp.py stands in for Lightning's
GPU-only FSDP strategy): each rank holds a shard of every parameter, as on a multi-GPU box."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import lmforge, ok

TESTS = Path(__file__).resolve().parent


@pytest.mark.slow
def test_pretraining_under_fsdp_on_two_processes(corpus: Path, tmp_path: Path):
    """Fits with norm clipping (Lightning's FSDP precision refuses it), samples text from the sharded model
    at steps 10 and 20, keeps weight decay on the weight matrices (the optimizer is built after FSDP has
    flattened them), and tests the best checkpoint after fitting (the fitted module cannot be wrapped again)."""
    run = tmp_path / "run"
    proc = ok(lmforge("train", "experiment=pretrain_tiny", "tokenizer=bytes", f"data.paths=[{corpus}]",
                      "trainer=fsdp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.precision=32-true",
                      "trainer.strategy._target_=cpu_fsdp.CPUFSDP", "+trainer.strategy.process_group_backend=gloo",
                      "trainer.max_steps=20", "trainer.val_check_interval=10", "model.n_layer=2",
                      "callbacks.text_samples.every_n_steps=10", "print_config=false", f"hydra.run.dir={run}",
                      cwd=tmp_path, env={"PYTHONPATH": str(TESTS)}, timeout=600))
    output = proc.stdout + proc.stderr
    assert "[sample @ step 10]" in output and "[sample @ step 20]" in output
    assert "test/loss" in json.loads((run / "metrics.json").read_text())
    best = torch.load(run / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=False)
    groups = {g["kind"]: g for g in best["optimizer_states"][0]["param_groups"]}
    assert groups["matrix"]["weight_decay"] == 0.1 and len(groups["matrix"]["params"]) == 8  # 4 per block
    assert groups["vector"]["weight_decay"] == 0.0
