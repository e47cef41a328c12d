"""Speech data for classification (a label per clip) and recognition (a transcript per clip).

Clips are read from a class folder, a manifest or an LJSpeech metadata.csv (`audio_manifest`), decoded
once to mono at the model's sampling rate (`audio_files`) and held in memory. With no `path`, the digit
words that espeak-ng speaks (`speech_synth`, made once in the cache). Label clips longer than
`max_seconds` are cut to it: at a random place in training (a function of the run's seed, the epoch and
the clip, so a resumed run cuts the same), at the start in evaluation. Transcribed clips are never cut
(a cut would lose words). Transcripts are normalised (`transcripts.normalise`) and their characters,
from the training split, are the vocabulary of a CTC tokenizer (saved with the run).
Batches: `{"input_values", "attention_mask", "labels"}` from the models' feature extractor, labels a
class index per clip, or character ids padded with -100.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Annotated, Any, Literal, Optional

import numpy as np
import torch
from pydantic import Field
from torch.utils.data import DataLoader, Dataset

from lmforge.config.schema import NonNegative, Positive
from lmforge.data.audio_files import BadAudio, decode, feature_extractor
from lmforge.data.audio_manifest import SPLITS, Entry, assign_splits, read_entries
from lmforge.data.base import DataModule
from lmforge.data.classification import sort_labels
from lmforge.data.sampler import ResumableSampler
from lmforge.data.transcripts import characters, ctc_tokenizer, normalise
from lmforge.errors import UserError
from lmforge.seeding import mix

log = logging.getLogger(__name__)

IGNORE = -100  # a label position without a loss (padding)
Fraction = Annotated[float, Field(ge=0, lt=1)]


class DrawingSampler(ResumableSampler):
    """The training order of `ResumableSampler`, each index paired with a number drawn from (seed, epoch,
    index): where a clip is cut follows from where the run is, not from what ran before."""

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for index in super().__iter__():
            yield index, mix(self.seed, self.epoch, index)


class Clips(Dataset):
    """Decoded clips and their targets; an item is (samples, target), cut to `max_samples` when set."""

    def __init__(self, clips: list[np.ndarray], targets: list[Any], max_samples: Optional[int]) -> None:
        self.clips, self.targets, self.max_samples = clips, targets, max_samples

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[np.ndarray, Any]:
        index, draw = key if isinstance(key, tuple) else (key, None)
        samples = self.clips[index]
        if self.max_samples is not None and len(samples) > self.max_samples:
            start = draw % (len(samples) - self.max_samples + 1) if draw is not None else 0
            samples = samples[start:start + self.max_samples]
        return samples, self.targets[index]


class Collate:
    """A batch through the feature extractor (normalised, zero-padded, attention mask) with its labels."""

    def __init__(self, sampling_rate: int) -> None:
        self.sampling_rate = sampling_rate
        self.extractor = feature_extractor(sampling_rate)

    def __call__(self, batch: list[tuple[np.ndarray, Any]]) -> dict[str, torch.Tensor]:
        features = self.extractor([samples for samples, _ in batch], sampling_rate=self.sampling_rate,
                                  padding=True, return_tensors="pt")
        targets = [target for _, target in batch]
        if isinstance(targets[0], int):
            labels = torch.tensor(targets, dtype=torch.long)
        else:
            labels = torch.full((len(targets), max(1, *(len(t) for t in targets))), IGNORE, dtype=torch.long)
            for i, ids in enumerate(targets):
                labels[i, :len(ids)] = torch.tensor(ids, dtype=torch.long)
        return {"input_values": features["input_values"], "attention_mask": features["attention_mask"],
                "labels": labels}


class AudioFolderDataModule(DataModule):
    """Labelled or transcribed audio clips (see the module's docstring); `target` picks which: `auto` is
    text when the source has transcripts and no labels, else label."""

    keeps_run_tokenizer = True  # the characters of the training transcripts, as the run saved them

    def __init__(self, path: Optional[str] = None, target: Literal["auto", "label", "text"] = "auto",
                 sampling_rate: Positive = 16000, max_seconds: Optional[float] = 2.0, batch_size: Positive = 16,
                 num_workers: NonNegative = 0, val_fraction: Fraction = 0.1, test_fraction: Fraction = 0.1,
                 split_seed: int = 0, on_bad_audio: Literal["error", "skip"] = "error",
                 cache_dir: str = ".cache") -> None:
        super().__init__()
        if max_seconds is not None and max_seconds <= 0:
            raise UserError(f"data.max_seconds must be positive (or null: no cut), got {max_seconds}")
        if val_fraction + test_fraction >= 1:
            raise UserError("data.val_fraction + data.test_fraction must be below 1")
        self.path, self.target, self.sampling_rate, self.max_seconds = path, target, sampling_rate, max_seconds
        self.batch_size, self.num_workers = batch_size, num_workers
        self.fractions = {"val": val_fraction, "test": test_fraction}
        self.split_seed, self.on_bad_audio, self.cache_dir = split_seed, on_bad_audio, cache_dir
        self.skipped: list[str] = []  # the bad files left out (on_bad_audio=skip), one line each
        self._entries: Optional[dict[str, list[Entry]]] = None
        self._audio: dict[str, list[np.ndarray]] = {}
        self._labels: Optional[list[str]] = None

    # ---- reading ---------------------------------------------------------------------------------

    def prepare_data(self) -> None:
        self._load()

    @property
    def kind(self) -> str:
        """"label" (classification) or "text" (recognition), once the source is read."""
        return self._load()[1]

    def _load(self) -> tuple[dict[str, list[Entry]], str]:
        if self._entries is not None:
            return self._entries, self._kind
        source = self.path
        if source is None:
            from lmforge.data.speech_synth import spoken_digits

            source = spoken_digits(self.cache_dir)
        entries = read_entries(source)
        kind = self.target
        if kind == "auto":
            kind = "text" if all(e.text is not None for e in entries) and all(e.label is None for e in entries) \
                else "label"
        for entry in entries:
            if (entry.label if kind == "label" else entry.text) is None:
                raise UserError(f"{entry.where}: no {kind} (data.target={self.target} reads the {kind} of each clip)")
        parts = assign_splits(entries, self.fractions, self.split_seed, by="label" if kind == "label" else None)
        decoded = {}
        for name in SPLITS:
            decoded[name] = self._decode(parts[name]) if name != "test" or parts["test"] is not parts["val"] \
                else decoded["val"]
        self._entries = {name: [e for e, _ in decoded[name]] for name in SPLITS}
        self._audio = {name: [a for _, a in decoded[name]] for name in SPLITS}
        self._kind = kind
        if self.skipped:
            log.warning("data.on_bad_audio=skip: left out %d bad audio file(s); the first: %s", len(self.skipped),
                        self.skipped[0])
        if kind == "label":
            self._labels = sort_labels({e.label for e in self._entries["train"]})
            if len(self._labels) < 2:
                raise UserError(f"data.path: the training clips have only one label ({self._labels[0]}); need 2 or more")
            for entry in self._entries["val"] + self._entries["test"]:
                if entry.label not in self._labels:
                    raise UserError(f"{entry.where}: label {entry.label!r} has no training clip")
        elif self.tokenizer is None:
            self.tokenizer = ctc_tokenizer(characters(normalise(e.text) for e in self._entries["train"]))
        return self._entries, kind

    def _decode(self, entries: list[Entry]) -> list[tuple[Entry, np.ndarray]]:
        out = []
        for entry in entries:
            try:
                out.append((entry, decode(entry.path, self.sampling_rate)))
            except BadAudio as exc:
                if self.on_bad_audio == "error":
                    where = f" (named at {entry.where})" if entry.where != str(entry.path) else ""
                    raise BadAudio(f"{exc}{where}; data.on_bad_audio=skip leaves such files out") from None
                self.skipped.append(str(exc))
        return out

    # ---- what the builders and modules read -----------------------------------------------------

    @property
    def dims(self) -> dict[str, Any]:
        entries, kind = self._load()
        sizes: dict[str, Any] = {"sampling_rate": self.sampling_rate}
        if kind == "label":
            return {**sizes, "num_labels": len(self.labels), "labels": list(self.labels)}
        return {**sizes, "vocab_size": len(self.tokenizer)}

    @property
    def labels(self) -> list[str]:
        self._load()
        if self._labels is None:
            raise UserError("the data has transcripts, not labels (data.target=text): use module=ctc_asr")
        return self._labels

    @property
    def class_names(self) -> Optional[list[str]]:
        return self.labels if self.kind == "label" else None

    def set_tokenizer(self, tokenizer: Any) -> None:
        """Use the vocabulary a run was trained with (rebuilding a run): ids stay those the model learned."""
        self.tokenizer = tokenizer

    def test_paths(self) -> list[str]:
        """The test clips' files, in the order of `test_dataloader`."""
        return [str(e.path) for e in self._load()[0]["test"]]

    def test_references(self) -> list[str]:
        """The test clips' labels, or normalised transcripts, in the order of `test_dataloader`."""
        entries, kind = self._load()
        return [e.label if kind == "label" else normalise(e.text) for e in entries["test"]]

    # ---- loaders ---------------------------------------------------------------------------------

    def _targets(self, split: str) -> list[Any]:
        entries, kind = self._load()
        if kind == "label":
            index = {label: i for i, label in enumerate(self.labels)}
            return [index[e.label] for e in entries[split]]
        return [self.tokenizer(normalise(e.text)).input_ids for e in entries[split]]

    def _loader(self, split: str, train: bool) -> DataLoader:
        entries, kind = self._load()
        cut = round(self.max_seconds * self.sampling_rate) if self.max_seconds and kind == "label" else None
        dataset = Clips(self._audio[split], self._targets(split), cut)
        return self.loader(dataset, train=train, collate_fn=Collate(self.sampling_rate))

    def train_sampler(self, n: int, batch_size: int) -> DrawingSampler:
        """The base's resumable order, each index with its draw (where a long clip is cut)."""
        return DrawingSampler(n, seed=self.run_seed, shuffle=True, batch_size=batch_size, trainer=self.trainer)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)

    @property
    def seconds(self) -> dict[str, float]:
        """Seconds of audio in each split (for throughput figures)."""
        return {name: sum(len(a) for a in self._audio.get(name, [])) / self.sampling_rate for name in SPLITS}
