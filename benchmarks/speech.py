"""Seconds of audio trained on per second: `experiment=audio_classify` (wav2vec2_tiny on the spoken digits,
batch 16, the unchanged preset and its default callbacks) vs a minimal hand-written loop of the same model,
features and optimizer.

Both sides run in this process, alternating (`--rounds`), on the same decoded clips (the digits that
espeak-ng speaks, synthesised into a temp cache once). lmforge: `lmforge.run_train` with one more callback,
`AudioClock` (from this file, through `+callbacks.audio_clock._target_=speech.AudioClock`), which stamps
`perf_counter` and the batch's seconds of audio (its attention mask's samples over the rate) at the end of
every training step. Plain loop: the model from the same builder and seed, AdamW (lr 3e-3, weight decay
0.01), the same linear warm-up, `clip_grad_norm_(1.0)`, batches cut to 2 s and put through the same
feature extractor, shuffled by `torch.randperm`; it stamps the same way. The rate of each side: the audio
of steps `--skip`+1..`--steps` over the time from the end of step `--skip` to the end of the last, lmforge's
validations left out (the plain loop has none).

    python benchmarks/speech.py                     # 3 rounds of 30 steps each side
    python benchmarks/speech.py --rounds 5 --steps 40 --rate 8000
    python benchmarks/speech.py callbacks=minimal +trainer.enable_progress_bar=false    # a lean lmforge
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

STAMPS: list[tuple[float, float]] = []  # (perf_counter, seconds of audio) at the end of each step
PAUSES: list[tuple[float, float]] = []  # lmforge's validations (the plain loop has none): left out of its time


def __getattr__(name: str):
    if name == "AudioClock":  # built lazily: importing this file does not import lightning
        import lightning as L

        class AudioClock(L.Callback):
            def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
                rate = trainer.datamodule.sampling_rate
                STAMPS.append((time.perf_counter(), float(batch["attention_mask"].sum()) / rate))

            def on_validation_start(self, trainer, pl_module) -> None:
                PAUSES.append((time.perf_counter(), float("inf")))

            def on_validation_end(self, trainer, pl_module) -> None:
                PAUSES[-1] = (PAUSES[-1][0], time.perf_counter())

        return AudioClock
    raise AttributeError(name)


def rate(stamps: list[tuple[float, float]], skip: int, pauses: list[tuple[float, float]] = ()) -> float:
    """Seconds of audio per second of steps skip+1..N, the `pauses` (validation) left out."""
    from _clock import busy_time

    (t0, _), rest = stamps[skip - 1], stamps[skip:]
    return sum(seconds for _, seconds in rest) / busy_time(t0, rest[-1][0], list(pauses))


def lmforge_side(cache: Path, steps: int, sampling_rate: int, out: Path, extra: list[str]) -> list[tuple[float, float]]:
    import speech  # this file as the module the callback lives in (not __main__)

    import lmforge

    speech.STAMPS.clear()
    speech.PAUSES.clear()
    config = lmforge.compose("train", [
        "experiment=audio_classify", f"paths.cache_dir={cache}", f"data.sampling_rate={sampling_rate}",
        f"trainer.max_steps={steps}", "test=false", "print_config=false", "logger=csv",
        "trainer.limit_val_batches=1", "+callbacks.audio_clock._target_=speech.AudioClock", *extra])
    lmforge.run_train(config, run_dir=out)
    return list(speech.STAMPS), list(speech.PAUSES)


def plain_side(cache: Path, steps: int, sampling_rate: int) -> list[tuple[float, float]]:
    import torch
    import torch.nn.functional as F

    from lmforge.data.audio_files import feature_extractor
    from lmforge.data.audio_folder import AudioFolderDataModule
    from lmforge.models.audio import wav2vec2

    data = AudioFolderDataModule(target="label", sampling_rate=sampling_rate, cache_dir=str(cache))
    data.prepare_data()
    clips, entries = data._audio["train"], data._load()[0]["train"]
    labels = torch.tensor([data.labels.index(e.label) for e in entries])
    torch.manual_seed(42)
    model = wav2vec2(num_labels=len(data.labels), labels=data.labels, sampling_rate=sampling_rate).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / 20) * max(0.0, 1 - s / steps))
    extractor, cut, stamps = feature_extractor(sampling_rate), 2 * sampling_rate, []
    order = torch.randperm(len(clips)).tolist()
    for step in range(steps):
        index = [order[(step * 16 + i) % len(order)] for i in range(16)]
        inputs = extractor([clips[i][:cut] for i in index], sampling_rate=sampling_rate, padding=True,
                           return_tensors="pt")
        loss = F.cross_entropy(model(**inputs).logits, labels[index])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        stamps.append((time.perf_counter(), float(inputs["attention_mask"].sum()) / sampling_rate))
    return stamps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--skip", type=int, default=5, help="warm-up steps left out of each rate")
    parser.add_argument("--rate", type=int, default=16000, help="data.sampling_rate")
    parser.add_argument("overrides", nargs="*", help="more Hydra overrides for the lmforge side")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # `speech.AudioClock` for the lmforge side
    with tempfile.TemporaryDirectory() as folder:
        cache = Path(folder) / "cache"
        ours, plain = [], []
        for round_ in range(args.rounds):
            stamps, pauses = lmforge_side(cache, args.steps, args.rate, Path(folder) / f"run{round_}", args.overrides)
            ours.append(rate(stamps, args.skip, pauses))
            plain.append(rate(plain_side(cache, args.steps, args.rate), args.skip))
            print(f"round {round_ + 1}: lmforge {ours[-1]:.1f} s/s, plain loop {plain[-1]:.1f} s/s", flush=True)
    a, b = statistics.median(ours), statistics.median(plain)
    print(f"seconds of audio per second (median of {args.rounds}): lmforge {a:.1f}, plain loop {b:.1f}, "
          f"ratio {a / b:.3f}")


if __name__ == "__main__":
    main()
