"""benchmarks/gpu_check.py --dry-run (what CI can run without a GPU) validates every GPU config."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def test_gpu_check_dry_run_validates_every_gpu_config():
    proc = subprocess.run([sys.executable, str(BENCHMARKS / "gpu_check.py"), "--dry-run"], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = [line for line in proc.stdout.splitlines()[1:] if line.strip()]
    assert len(rows) == 4 and all(" valid " in row for row in rows), proc.stdout
    assert "bf16-mixed" in proc.stdout


def test_gpu_check_dry_run_fails_on_an_invalid_config(monkeypatch, capsys):
    sys.path.insert(0, str(BENCHMARKS))
    import gpu_check

    monkeypatch.setitem(gpu_check.CHECKS, "broken", ["experiment=pretrain_tiny", "trainer=gpu", "optimizer.lr=-1"])
    assert gpu_check.dry_run() == 1
    assert "INVALID" in capsys.readouterr().out


def test_gpu_check_dry_run_composes_the_arguments_the_run_passes(monkeypatch, capsys):
    """Each check's run directory is named after it: a name with parentheses and commas still gives
    an override Hydra parses; an override it cannot parse fails the dry run (it would fail the run)."""
    sys.path.insert(0, str(BENCHMARKS))
    import gpu_check

    monkeypatch.setattr(gpu_check, "CHECKS", {"pretrain_tiny, trainer=gpu (bf16)": ["experiment=pretrain_tiny"]})
    assert gpu_check.dry_run() == 0
    monkeypatch.setattr(gpu_check, "CHECKS", {"unparsable": ["experiment=pretrain_tiny", "trainer.max_steps=)"]})
    assert gpu_check.dry_run() == 1
    assert "INVALID" in capsys.readouterr().out
