"""The offline default speech data: the ten digit words spoken by espeak-ng in several voices, speeds and
pitches, with a little noise, written once into the cache as 22.05 kHz WAV files and a manifest
(`path,label,text`). The same every time: a fixed list of settings and noise seeded by the clip."""

from __future__ import annotations

import itertools
import shutil
import subprocess
from pathlib import Path

import numpy as np

from lmforge.atomic import publish_dir
from lmforge.errors import UserError
from lmforge.extras import require

WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
VOICES = ("en+m3", "en+f3", "en-us+m1", "en-us+f2", "en-gb-scotland+m2", "en-029+f4")
SPEEDS = (135, 175)
PITCHES = (35, 70)
NOISE = 0.003  # standard deviation of the added white noise (full scale 1.0): ~30 dB below the speech
VERSION = "digits-v1"  # a new version when any of the above changes: a fresh folder in the cache


def espeak() -> str:
    """The espeak-ng program, or one line saying how to get it."""
    program = shutil.which("espeak-ng")
    if program is None:
        raise UserError("data.path is not set and espeak-ng, which synthesises the default speech data, is not "
                        "installed: apt-get install espeak-ng, or give data.path=<folder or manifest>")
    return program


def spoken_digits(cache_dir: str | Path) -> Path:
    """The manifest of the synthesised digit words under `cache_dir/speech/`, made on first use
    (240 clips, a few seconds); columns path (relative to the manifest), label and text."""
    folder = Path(cache_dir) / "speech" / VERSION
    manifest = folder / "manifest.csv"
    if manifest.is_file():
        return manifest
    program = espeak()
    soundfile = require("soundfile", "speech", "writing the synthesised speech")
    folder.parent.mkdir(parents=True, exist_ok=True)
    with publish_dir(folder, replace=True) as tmp:
        rows = ["path,label,text"]
        settings = itertools.product(VOICES, SPEEDS, PITCHES, WORDS)
        for i, (voice, speed, pitch, word) in enumerate(settings):
            name = f"{word}_{voice.replace('+', '_')}_{speed}_{pitch}.wav"
            subprocess.run([program, "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", str(tmp / name), word],
                           check=True, capture_output=True, timeout=60)
            samples, rate = soundfile.read(str(tmp / name), dtype="float32")
            noise = np.random.default_rng(i).normal(0.0, NOISE, samples.shape).astype(np.float32)
            soundfile.write(str(tmp / name), np.clip(samples + noise, -1.0, 1.0), rate, subtype="PCM_16")
            rows.append(f"{name},{word},{word}")
        (tmp / "manifest.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return manifest
