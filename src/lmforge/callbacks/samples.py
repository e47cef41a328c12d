"""Print and log a short generated text every N optimizer steps: the quickest sanity check of an LM."""

from __future__ import annotations

from typing import Any, Optional

import lightning as L
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from lmforge.data.base import DataModule
from lmforge.distributed import whole_parameters
from lmforge.generation import generate
from lmforge.modules.base import task_model


class TextSamples(L.Callback):
    """Every `every_n_steps` optimizer steps and at the end of fitting, continue `prompt` with the
    current model (seeded sampling, so runs compare), print it on rank 0 and log it to W&B
    (`log_text`) or TensorBoard (`add_text`). Every rank generates, a sharded (FSDP) model with its whole
    parameters gathered for the time of it.

    A run that validates samples at the end of the first validation at or after each multiple of
    `every_n_steps`: beside the validation metrics, and as evaluation, outside the training steps
    (whose time tokens/s measures); a run without validation samples right after that step."""

    def __init__(self, every_n_steps: int = 500, prompt: Optional[str] = None, max_new_tokens: int = 48,
                 temperature: float = 0.8, top_k: Optional[int] = 50, seed: int = 1234,
                 tokenizer: Any = None):
        self.every_n_steps = every_n_steps
        self.prompt = prompt or ""  # empty: start a new document
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.top_k = top_k
        self.seed = seed
        self.tokenizer = tokenizer
        self._last_step = -1
        self.samples: list[tuple[int, str]] = []  # (step, text) of this process, for inspection

    def _tokenizer(self, trainer: L.Trainer):
        datamodule = trainer.datamodule
        return self.tokenizer or (datamodule.tokenizer if isinstance(datamodule, DataModule) else None)

    def sample(self, trainer: L.Trainer, pl_module: L.LightningModule) -> Optional[str]:
        """Generate one sample now, print and log it; returns the text (None without a tokenizer)."""
        step = trainer.global_step
        if step == self._last_step:
            return None
        self._last_step = step
        tokenizer = self._tokenizer(trainer)
        if tokenizer is None:
            rank_zero_warn("TextSamples: no tokenizer (pass one, or use a datamodule with .tokenizer); skipped")
            return None
        model = task_model(pl_module)
        with whole_parameters(trainer.model):
            text = generate(model, tokenizer, self.prompt, max_new_tokens=self.max_new_tokens,
                            temperature=self.temperature, top_k=self.top_k, seed=self.seed)
        self.samples.append((step, text))
        if trainer.is_global_zero:
            rank_zero_info(f"[sample @ step {step}] {self.prompt}{text}")
            self._log(trainer, step, self.prompt + text)
        return text

    @staticmethod
    def _log(trainer: L.Trainer, step: int, text: str) -> None:
        from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger

        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_text(key="samples", columns=["step", "text"], data=[[step, text]], step=step)
            elif isinstance(logger, TensorBoardLogger):
                logger.experiment.add_text("samples", text, global_step=step)

    def _due(self, step: int) -> bool:
        """A multiple of every_n_steps was reached since the last sample (or the start)."""
        return self.every_n_steps > 0 and step // self.every_n_steps > self._last_step // self.every_n_steps

    def on_train_start(self, trainer, pl_module) -> None:
        if self._last_step < 0:  # a resumed run had its samples up to here
            self._last_step = trainer.global_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._due(trainer.global_step) and not trainer.enable_validation:
            self.sample(trainer, pl_module)

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.state.fn == TrainerFn.FITTING and not trainer.sanity_checking and self._due(trainer.global_step):
            self.sample(trainer, pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        # Not on_fit_end: by then the strategy's teardown has moved the model off the accelerator.
        self.sample(trainer, pl_module)
