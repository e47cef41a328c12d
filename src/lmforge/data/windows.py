"""Windows of `block_size + 1` tokens read out of a packed token file: the samples of pretraining.

A sample is `{"input_ids": [T], "labels": [T]}` (labels already shifted), and with document masking
also `"position_ids"`: each input token's position in its document, 0 where a document starts (the
window's first token, and every token after an end-of-text token). The native GPT masks attention
block-causally from them: no token sees the document before its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch.utils.data import Dataset

from lmforge.errors import UserError


def document_positions(input_ids: torch.Tensor, eos_id: int) -> torch.Tensor:
    """[B, T] positions of each token in its document: they restart after every `eos_id` (the
    end-of-text token closes its document: it is the last token of it, not the first of the next)."""
    B, T = input_ids.shape
    starts = torch.zeros(B, T, dtype=torch.bool)
    starts[:, 0] = True
    starts[:, 1:] = input_ids[:, :-1] == eos_id
    index = torch.arange(T).expand(B, T)
    return index - torch.where(starts, index, 0).cummax(dim=1).values


def as_samples(rows: torch.Tensor, eos_id: Optional[int] = None,
               source: Optional[int] = None) -> list[dict[str, torch.Tensor]]:
    """Rows [N, T + 1] of tokens -> samples; `position_ids` when `eos_id` is given (document masking),
    `source` (the index of the mixture's source) when given."""
    inputs, labels = rows[:, :-1], rows[:, 1:]
    if eos_id is None and source is None:  # the default: as lean as it was
        return [{"input_ids": x, "labels": y} for x, y in zip(inputs.unbind(), labels.unbind())]
    columns = {"input_ids": inputs.unbind(), "labels": labels.unbind()}
    if eos_id is not None:
        columns["position_ids"] = document_positions(inputs, eos_id).unbind()
    samples = [dict(zip(columns, values)) for values in zip(*columns.values())]
    if source is not None:
        for sample in samples:
            sample["source"] = torch.tensor(source)
    return samples


def gather(data: np.ndarray, starts: np.ndarray, block_size: int) -> torch.Tensor:
    """The rows [N, block_size + 1] at `starts`, in one indexing of the token file."""
    return torch.from_numpy(data[starts[:, None] + np.arange(block_size + 1)].astype(np.int64))


class Packed:
    """Opens a token file lazily per process, so datasets pickle cheaply into DataLoader workers."""

    def __init__(self, path: Path, dtype: str, length: int) -> None:
        self.path, self.dtype, self.length = path, dtype, length
        self._data: np.ndarray | None = None

    @property
    def data(self) -> np.ndarray:
        if self._data is None:
            self._data = np.memmap(self.path, dtype=self.dtype, mode="r")
        return self._data

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_data": None}


class FixedWindows(Dataset):
    """Fixed, non-overlapping validation windows, evenly spaced over the split (of one source of a
    mixture when `source` is its index: the samples then carry it)."""

    def __init__(self, tokens: Packed, block_size: int, n: int,
                 remedy: str = "add documents, raise data.val_fraction or lower data.block_size",
                 eos_id: Optional[int] = None, source: Optional[int] = None, what: str = "validation split") -> None:
        span = block_size + 1
        fit = tokens.length // span
        if fit == 0:
            raise UserError(f"{what} has {tokens.length} tokens, fewer than block_size+1={span}; {remedy}")
        n = min(n, fit)
        stride = (tokens.length - span) // (n - 1) if n > 1 else 0  # >= span since n * span <= length
        self.starts = np.arange(n, dtype=np.int64) * stride
        self.tokens, self.block_size, self.eos_id, self.source = tokens, block_size, eos_id, source

    def __len__(self) -> int:
        return len(self.starts)

    def __getitems__(self, indices: list[int]) -> list[dict[str, torch.Tensor]]:
        return as_samples(gather(self.tokens.data, self.starts[indices], self.block_size), self.eos_id, self.source)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self.__getitems__([index])[0]
