"""Audio files decoded with soundfile (WAV, FLAC, OGG/Vorbis, ...), mixed down to mono and resampled with
SciPy's polyphase filter: the one place audio is opened, so every audio data module names a bad file the
same way; and the feature extractor that turns clips into model inputs (also the one an export ships)."""

from __future__ import annotations

from math import gcd
from pathlib import Path
from typing import Any

import numpy as np

from lmforge.errors import UserError
from lmforge.extras import require

#: File suffixes read as audio when a folder is scanned (a manifest may name any file soundfile reads).
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".mp3", ".aiff", ".aif")
#: A clip whose loudest sample is below this (full scale 1.0) is silent: nothing to learn from.
SILENCE_PEAK = 1e-4


class BadAudio(UserError):
    """A file that is not audio, is truncated, empty or silent: names the file."""


def decode(path: str | Path, sampling_rate: int) -> np.ndarray:
    """The clip at `path` as float32 mono samples at `sampling_rate` (channels averaged, resampled with
    `scipy.signal.resample_poly`); a file that cannot be decoded, holds no samples or only silence raises
    BadAudio naming it (a data module counts and skips those on request)."""
    soundfile = require("soundfile", "speech", "reading audio files")
    try:
        samples, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (OSError, RuntimeError, ValueError, soundfile.LibsndfileError) as exc:
        raise BadAudio(f"{path}: unreadable audio ({' '.join(str(exc).split())})") from None
    if samples.size == 0:
        raise BadAudio(f"{path}: empty audio (no samples)")
    mono = samples.mean(axis=1)
    if not np.isfinite(mono).all():
        raise BadAudio(f"{path}: audio with NaN or infinite samples")
    if float(np.abs(mono).max()) < SILENCE_PEAK:
        raise BadAudio(f"{path}: silent audio (every sample below {SILENCE_PEAK} of full scale)")
    return resample(mono, rate, sampling_rate)


def resample(samples: np.ndarray, rate: int, target: int) -> np.ndarray:
    """`samples` at `rate` Hz resampled to `target` Hz (polyphase, anti-aliased); float32."""
    if rate == target:
        return samples.astype(np.float32, copy=False)
    signal = require("scipy.signal", "speech", "resampling audio")
    common = gcd(int(rate), int(target))
    out = signal.resample_poly(samples, int(target) // common, int(rate) // common)
    return out.astype(np.float32, copy=False)


def feature_extractor(sampling_rate: int) -> Any:
    """The Wav2Vec2 feature extractor of the models: each clip scaled to zero mean and unit variance over
    its own samples, batches padded with zeros and an attention mask. Training, evaluation and an
    exported model's pipelines all go through it, so they see the same inputs."""
    from transformers import Wav2Vec2FeatureExtractor

    return Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=int(sampling_rate), padding_value=0.0,
                                    do_normalize=True, return_attention_mask=True)
