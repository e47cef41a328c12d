"""Which training steps the loggers write: metrics logged on other steps are never written, and a
`log` call costs about as much as a whole optimizer step of our smallest models."""

from __future__ import annotations

import lightning as L


def written_step(trainer: L.Trainer, step: int) -> bool:
    """Whether what is logged while finishing optimizer step `step` (counted from 1) gets written:
    every `log_every_n_steps` steps, the run's last step, and every step of a fast_dev_run."""
    return step % max(1, trainer.log_every_n_steps) == 0 or step == trainer.max_steps or bool(trainer.fast_dev_run)


def logger_step(trainer: L.Trainer) -> int:
    """The step a logger files what is logged now under: Lightning writes what optimizer step N logs (its
    training row, the validation after it) at step N - 1, and what a callback logs must line up with it."""
    return max(0, trainer.global_step - 1)


class OncePerWrittenStep:
    """True the first time it is asked at a written step, False otherwise: a callback's end-of-batch hook
    runs once per batch, several per optimizer step under gradient accumulation, but logs once a step."""

    def __init__(self) -> None:
        self._last = -1

    def __call__(self, trainer: L.Trainer, step: int) -> bool:
        if step == self._last or not written_step(trainer, step):
            return False
        self._last = step
        return True
