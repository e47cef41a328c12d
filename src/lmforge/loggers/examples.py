"""A few validation examples shown beside the curves: images with their label and prediction, or text
pairs (a reference and its transcript). W&B gets an image panel or a table, TensorBoard images and a
markdown table; CSV has nowhere to show them."""

from __future__ import annotations

from typing import Sequence

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger

from lmforge.loggers.cadence import logger_step


def should_show(trainer: L.Trainer, batch_idx: int) -> bool:
    """Examples come from the first validation batch of rank 0, not from the sanity check."""
    return batch_idx == 0 and trainer.is_global_zero and not trainer.sanity_checking


def log_table(trainer: L.Trainer, key: str, columns: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Rows of text (one example each) under `key`, at the step of the validation metrics."""
    step = logger_step(trainer)
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            logger.log_text(key=key, columns=list(columns), data=[list(row) for row in rows], step=step)
        elif isinstance(logger, TensorBoardLogger):
            logger.experiment.add_text(key, markdown_table(columns, rows), global_step=step)


def log_images(trainer: L.Trainer, key: str, images: torch.Tensor, captions: Sequence[str]) -> None:
    """Images [N, 3, H, W] (as the model saw them) with a caption each, under `key`, at the step of the
    validation metrics."""
    step = logger_step(trainer)
    shown = displayable(images)
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            pictures = [image.permute(1, 2, 0).numpy() for image in shown]
            logger.log_image(key=key, images=pictures, caption=list(captions), step=step)
        elif isinstance(logger, TensorBoardLogger):
            logger.experiment.add_images(key, shown, global_step=step, dataformats="NCHW")
            logger.experiment.add_text(key, markdown_table(("image", "caption"), list(enumerate(captions))),
                                       global_step=step)


def displayable(images: torch.Tensor) -> torch.Tensor:
    """uint8 images, each stretched to 0..255 over its own range: the model's inputs are normalised with
    statistics the logger does not know, and stretching shows them whatever those were."""
    images = images.detach().float().cpu()
    low = images.amin(dim=(1, 2, 3), keepdim=True)
    high = images.amax(dim=(1, 2, 3), keepdim=True)
    return ((images - low) / (high - low).clamp(min=1e-8) * 255).round().to(torch.uint8)


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A markdown table (TensorBoard renders its text as markdown); pipes in a cell escaped."""
    def cell(value: object) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    lines += ["| " + " | ".join(cell(value) for value in row) + " |" for row in rows]
    return "\n".join(lines)
