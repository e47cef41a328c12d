"""The worker side of packing: token ids of text batches, in a process that imports little.

Kept apart from `lmforge.data.packing` so that its spawned worker processes start in a fraction of
a second (numpy and the encoder only, no transformers).
"""

from __future__ import annotations

import numpy as np

from lmforge.tokenizers.fast import TextEncoder

COUNTS = ("parts", "train_tokens", "val_tokens", "train_bytes", "val_bytes", "train_docs", "val_docs")

# An encoder rebuilt from the tokenizer's JSON in each process.
worker_state: dict = {}


def init_worker(tokenizer_json: str, fast: bool, eos_id: int, dtype: str) -> None:
    worker_state.update(encoder=TextEncoder(tokenizer_json, fast), eos=eos_id, dtype=np.dtype(dtype))


def encode(batch: list[tuple[str, bool]]) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """Encode a batch of (text, held out): the packed train ids, the packed val ids, and counts."""
    encoded = worker_state["encoder"].encode_batch([text for text, _ in batch])
    eos = worker_state["eos"]
    ids: dict[bool, list[int]] = {False: [], True: []}
    counts = dict.fromkeys(COUNTS, 0)
    for (text, held_out), part in zip(batch, encoded):
        ids[held_out] += part
        ids[held_out].append(eos)
        side = "val" if held_out else "train"
        counts[f"{side}_bytes"] += len(text.encode())
        counts[f"{side}_docs"] += 1
    counts["parts"] = len(batch)
    counts["train_tokens"], counts["val_tokens"] = len(ids[False]), len(ids[True])
    dtype = worker_state["dtype"]
    return np.array(ids[False], dtype=dtype), np.array(ids[True], dtype=dtype), counts


