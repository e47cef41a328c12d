"""Speech recognition with a CTC head: the model's CTC loss, greedy decoding (the most likely symbol of each
frame, repeats merged, blanks dropped: what the `automatic-speech-recognition` pipeline does), word and
character error rates (torchmetrics) on val/test, and `predictions.csv` (path, reference, hypothesis, wer
of each clip) at the end of a run; a few reference/hypothesis pairs of each validation in the run's log,
W&B and TensorBoard."""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path
from typing import Any, Callable, Literal, Optional

import torch
from torch import nn
from torchmetrics.functional.text import word_error_rate
from torchmetrics.text import CharErrorRate, WordErrorRate

from lmforge.atomic import write_text
from lmforge.data.base import DataModule
from lmforge.errors import UserError
from lmforge.loggers.examples import log_table, should_show
from lmforge.modules.base import TaskModule

IGNORE = -100  # padding of the label ids
SHOWN_PAIRS = 3  # reference/hypothesis pairs of each validation: in the run's log, W&B and TensorBoard

log = logging.getLogger(__name__)


def frame_lengths(config: Any, samples: torch.Tensor) -> torch.Tensor:
    """Frames the convolutional feature encoder makes of `samples` samples (its config's kernels and
    strides, no padding): the frames of a clip in a padded batch, the rest being padding."""
    lengths = samples.long()
    for kernel, stride in zip(config.conv_kernel, config.conv_stride):
        lengths = torch.div(lengths - kernel, stride, rounding_mode="floor") + 1
    return lengths.clamp(min=0)


class CTCModule(TaskModule):
    """Trains on batches `{"input_values", "attention_mask", "labels": [B, L] ids padded with -100}`;
    decodes with the data's tokenizer (its characters, blank = pad)."""

    def __init__(self, model: nn.Module, optimizer: Optional[Callable] = None,
                 scheduler: Optional[Callable] = None, nan_policy: Literal["stop", "skip"] = "stop"):
        super().__init__(model, optimizer, scheduler, nan_policy)
        if not hasattr(model, "config") or not hasattr(model.config, "conv_kernel"):  # a declared part of wav2vec2
            raise UserError(f"module=ctc_asr needs a wav2vec2-style CTC model (model=wav2vec2_tiny), got "
                            f"{type(model).__name__}")
        for stage in ("val", "test"):
            setattr(self, f"{stage}_wer", WordErrorRate())
            setattr(self, f"{stage}_cer", CharErrorRate())
        self.test_pairs: Optional[list[tuple[str, str]]] = None  # (reference, hypothesis) after a test
        self._pairs: list[tuple[str, str]] = []

    def forward(self, input_values: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
                labels: Optional[torch.Tensor] = None) -> Any:
        return self.model(input_values=input_values, attention_mask=attention_mask, labels=labels)

    def training_loss(self, batch):
        loss = self(**batch).loss
        self.log("train/loss", loss, on_step=True, on_epoch=False, prog_bar=True, batch_size=len(batch["labels"]))
        return loss

    def transcribe(self, batch: dict[str, torch.Tensor], logits: torch.Tensor) -> list[str]:
        """Greedy transcripts of a batch's logits, each over its own frames (not the padding)."""
        tokenizer = self._tokenizer()
        frames = frame_lengths(self.model.config, batch["attention_mask"].sum(-1))
        ids = logits.argmax(-1).cpu()
        # repeats merged before blanks are dropped ("n <blank> n" is "nn"): skip_special_tokens=True would drop
        # the blanks first; <unk> stays visible
        return [tokenizer.decode(ids[i, :n].tolist(), skip_special_tokens=False) for i, n in enumerate(frames.tolist())]

    def references(self, labels: torch.Tensor) -> list[str]:
        tokenizer = self._tokenizer()
        return [tokenizer.decode([i for i in row if i != IGNORE], group_tokens=False)
                for row in labels.cpu().tolist()]

    def _tokenizer(self) -> Any:
        datamodule = self.trainer.datamodule
        if not isinstance(datamodule, DataModule) or datamodule.tokenizer is None:
            raise UserError("module=ctc_asr needs transcribed data with a tokenizer (data=audio_folder, data.target=text)")
        return datamodule.tokenizer

    def _evaluate(self, batch: dict[str, torch.Tensor], stage: str) -> list[tuple[str, str]]:
        out = self(**batch)
        self.log(f"{stage}/loss", out.loss, on_step=False, on_epoch=True, prog_bar=True,
                 batch_size=len(batch["labels"]), sync_dist=True)
        pairs = list(zip(self.references(batch["labels"]), self.transcribe(batch, out.logits)))
        refs, hyps = [r for r, _ in pairs], [h for _, h in pairs]
        for name in ("wer", "cer"):
            metric = getattr(self, f"{stage}_{name}")  # getattr: this module's own metric of the stage
            metric(hyps, refs)
            self.log(f"{stage}/{name}", metric, on_step=False, on_epoch=True, prog_bar=name == "cer")
        return pairs

    def validation_step(self, batch, batch_idx):
        pairs = self._evaluate(batch, "val")
        if should_show(self.trainer, batch_idx):
            shown = "; ".join(f"{ref!r} -> {hyp!r}" for ref, hyp in pairs[:SHOWN_PAIRS])
            log.info("step %d, val reference -> hypothesis: %s", self.trainer.global_step, shown)
            log_table(self.trainer, "val/examples", ("reference", "hypothesis"), pairs[:SHOWN_PAIRS])

    def on_test_epoch_start(self) -> None:
        self._pairs = []

    def test_step(self, batch, batch_idx):
        self._pairs.extend(self._evaluate(batch, "test"))

    def on_test_epoch_end(self) -> None:
        pairs, self._pairs = self._pairs, []
        if self.trainer.world_size > 1:  # back into loader order: rank r holds items r, r+W, r+2W, ...
            import torch.distributed as dist

            gathered: list[Any] = [None] * self.trainer.world_size
            dist.all_gather_object(gathered, pairs)
            pairs = [pair for row in zip(*gathered) for pair in row]
        self.test_pairs = pairs

    def predict_step(self, batch, batch_idx):
        return self.transcribe(batch, self(batch["input_values"], batch["attention_mask"]).logits)

    def on_run_end(self, run_dir: Path, datamodule: Any) -> Optional[Path]:
        """`predictions.csv`: path, reference, hypothesis and the word error rate of each test clip."""
        if self.test_pairs is None:
            return None
        paths = datamodule.test_paths()
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["path", "reference", "hypothesis", "wer"])
        for path, (reference, hypothesis) in zip(paths, self.test_pairs):
            writer.writerow([path, reference, hypothesis, f"{float(word_error_rate(hypothesis, reference)):.4f}"])
        return write_text(Path(run_dir) / "predictions.csv", out.getvalue())
