"""What every lmforge DataModule offers the builders: declared here once, used as such."""

from __future__ import annotations

from typing import Any, Optional

import lightning as L
from torch.utils.data import DataLoader, Dataset, Sampler

from lmforge.data.sampler import PositionedLoader, ResumableSampler
from lmforge.errors import UserError


class DataModule(L.LightningDataModule):
    """A LightningDataModule that also tells the builders what the model must fit.

    The builders call `prepare_data()` first, then read `dims` (sizes named in data/contract.py's DIMS,
    for the null model and module parameters marked `FromData`), check the
    model against `context_length` and the tokenizer, and hand `bytes_per_token` to the LM metrics.
    """

    #: The tokenizer of text data (a Hugging Face tokenizer), None for other data.
    tokenizer: Any = None
    #: The config key that sets `context_length`, for error messages.
    context_key: str = "data.block_size"
    #: True when the data tokenizes with the model's own tokenizer (fine-tuning data): the builders
    #: then call `set_tokenizer` with the tokenizer of `init_from`.
    takes_model_tokenizer: bool = False
    #: True when batches carry `position_ids` of packed documents that must not see each other
    #: (data.document_mask): only a native GPT masks attention from them.
    document_mask: bool = False
    #: What turns raw inputs into the model's (an image processor, a feature extractor), None for data that
    #: needs none: saved in the run's `processor/` and exported beside the model.
    processor: Any = None
    #: True when the data normalises as the fine-tuned model's own processor says: the builders then call
    #: `set_processor` with the processor of `init_from` (when it has one).
    takes_model_processor: bool = False
    #: True when the data builds its tokenizer from its training split (a CTC vocabulary): a rebuilt run
    #: then hands it the tokenizer saved with the run (`set_tokenizer`), so ids stay those the model learned.
    keeps_run_tokenizer: bool = False
    #: The run's seed (set by the builders; not `data.seed`, a data module's own): the order follows it.
    run_seed: int = 0
    #: Examples per batch and loader worker processes (every data module's `data.batch_size`, `data.num_workers`).
    batch_size: int
    num_workers: int = 0

    @property
    def dims(self) -> dict[str, Any]:
        """Sizes (names from `lmforge.data.contract.DIMS`) for the null `FromData` parameters."""
        return {"vocab_size": len(self.tokenizer)} if self.tokenizer is not None else {}

    @property
    def class_names(self) -> Optional[list[str]]:
        """The names of the classes in index order, for classification data (None: not classification)."""
        return None

    @property
    def context_length(self) -> Optional[int]:
        """The longest sequence a batch can hold (checked against the model's positions)."""
        return None

    def bytes_per_token(self, stage: str) -> Optional[float]:
        """Raw-text bytes per token of the `stage` split ("val", "test"): turns a loss in nats per
        token into bits per byte, comparable across tokenizers. None when it does not apply."""
        return None

    @property
    def validation_sources(self) -> dict[str, float]:
        """Sources validated apart (a text mixture's, in the index order of the batches' `source`), each
        with its bytes per token: the LM metrics log `<stage>/loss/<source>` and `/bpb/<source>`."""
        return {}

    def check_splits(self) -> None:
        """Refuse splits the run cannot use (e.g. too short for one window), before the run begins;
        called once the model is known to fit the data."""

    def set_tokenizer(self, tokenizer: Any) -> None:
        """Tokenize with `tokenizer` (the fine-tuned model's own); only when `takes_model_tokenizer`."""
        raise UserError(f"{type(self).__name__} builds its own tokenizer; it cannot take the one of init_from")

    def set_processor(self, processor: Any) -> None:
        """Prepare inputs as `processor` (the fine-tuned model's own) does; only when `takes_model_processor`."""
        raise UserError(f"{type(self).__name__} prepares its inputs itself; it cannot take the processor of init_from")

    def train_sampler(self, n: int, batch_size: int) -> ResumableSampler:
        """The training order of `n` examples: shuffled by the run's seed (`run_seed`, which
        the builders set) and the epoch, continued mid-epoch when the run resumes."""
        return ResumableSampler(n, seed=self.run_seed, shuffle=True, batch_size=batch_size, trainer=self.trainer)

    def loader(self, dataset: Dataset, train: bool = False, sampler: Optional[Sampler] = None,
               **options: Any) -> DataLoader:
        """Batches of `batch_size` from `dataset` with `num_workers` workers: for training in the order of
        `sampler` (by default `train_sampler`'s) through a PositionedLoader, whose position checkpoints keep;
        else in order. `options`: the rest of DataLoader's arguments (collate_fn, ...)."""
        options.update(batch_size=self.batch_size, num_workers=self.num_workers,
                       persistent_workers=self.num_workers > 0)
        if not train:
            return DataLoader(dataset, **options)
        sampler = sampler if sampler is not None else self.train_sampler(len(dataset), self.batch_size)  # type: ignore[arg-type]
        return PositionedLoader(dataset, sampler=sampler, **options)
