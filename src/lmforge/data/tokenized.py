"""What the fine-tuning DataModules share: a tokenizer handed in from outside (the model's own) and
splits of tokenized examples padded per batch."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import DataLoader

from lmforge.data.base import DataModule
from lmforge.data.tables import check_table
from lmforge.errors import UserError
from lmforge.tokenizers.contract import Tokenizer, check_tokenizer, pad_id

IGNORE = -100  # label of positions without a loss (prompt, padding)


def pad_token_id(tokenizer: Tokenizer) -> int:
    """The id used for padding (`lmforge.tokenizers.contract.pad_id`); a tokenizer without one is refused."""
    value = pad_id(tokenizer)
    if value is None:
        raise UserError("the tokenizer has neither a pad nor an eos token; cannot pad batches")
    return value


class PadCollate:
    """Right-pads a batch to its longest example: `input_ids` with the pad id, `attention_mask` 0,
    per-token `labels` with -100; a per-example `label` becomes `labels` as is (a class: it pickles).
    Not transformers' collators: they take two classes for the two label kinds (DataCollatorWithPadding,
    DataCollatorForSeq2Seq) and a tokenizer whose pad token is set, which GPT-2-style ones lack."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, batch: list[dict]) -> dict[str, torch.Tensor]:
        width = max(len(b["input_ids"]) for b in batch)
        ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        per_token = "labels" in batch[0]
        labels = torch.full((len(batch), width), IGNORE, dtype=torch.long) if per_token else None
        for i, b in enumerate(batch):
            n = len(b["input_ids"])
            ids[i, :n] = torch.tensor(b["input_ids"], dtype=torch.long)
            mask[i, :n] = 1
            if per_token:
                labels[i, :n] = torch.tensor(b["labels"], dtype=torch.long)
        if not per_token:
            labels = torch.tensor([b["label"] for b in batch], dtype=torch.long)
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}


class TokenizedDataModule(DataModule):
    """Fine-tuning data tokenized with the model's own tokenizer. Subclasses set train_file/val_file/
    test_file and max_length, and fill `self._encoded[split]` (lists of example dicts) in `setup`."""

    takes_model_tokenizer = True
    context_key = "data.max_length"
    max_length: int
    _encoded: dict[str, list[dict]] | None = None

    @property
    def context_length(self) -> int:
        return self.max_length

    def check_files(self) -> None:
        """val/test files need a train file, and every file given must exist as a readable table."""
        if self.train_file is None and (self.val_file is not None or self.test_file is not None):
            raise UserError("data.val_file/data.test_file are set but data.train_file is not")
        for key in ("train_file", "val_file", "test_file"):
            path = getattr(self, key)  # getattr: this module's own setting of that config key
            if path is not None:
                check_table(path, f"data.{key}")

    def set_tokenizer(self, tokenizer: Any) -> None:
        """Use `tokenizer` (a Hugging Face tokenizer, usually the fine-tuned model's own)."""
        self.tokenizer = check_tokenizer(tokenizer, "init_from")
        self._encoded = None

    def _loader(self, name: str, shuffle: bool) -> DataLoader:
        if self._encoded is None:
            self.setup()
        return self.loader(self._encoded[name], train=shuffle, collate_fn=PadCollate(pad_token_id(self.tokenizer)))

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
