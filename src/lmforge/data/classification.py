"""Text classification data: user tables (CSV/TSV/JSONL) or the embedded stdlib-package task.

Files are checked in `__init__` (cheap, before any training starts) and parsed on first use;
the label set comes from the training split only. Batches are padded per batch to the longest
sequence: `{"input_ids", "attention_mask", "labels"}`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from torch.utils.data import DataLoader

from lmforge.config.schema import NonNegative
from lmforge.data import stdlib_tasks
from lmforge.data.splits import split
from lmforge.data.tables import LINE, read_rows, require_columns
from lmforge.data.tokenized import TokenizedDataModule
from lmforge.errors import UserError

TASKS = ("stdlib_packages",)
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Example:
    """One labelled text and where it came from (`path:line`, for error messages)."""

    text: str
    label: str
    where: str


def stratified_split(
    examples: list[Example], fractions: dict[str, float], seed: int
) -> dict[str, list[Example]]:
    """Split `examples` per label by hashed text: {"train": ..., **{name: ...}} for each fraction.

    Identical texts always land in the same split; each label keeps at least one text in train.
    """
    out: dict[str, list[Example]] = {"train": [], **{name: [] for name in fractions}}
    by_label: dict[str, list[Example]] = {}
    for ex in examples:
        by_label.setdefault(ex.label, []).append(ex)
    for label in sorted(by_label):
        for name, part in split(by_label[label], fractions, seed, key=lambda ex: ex.text).items():
            out[name].extend(part)
    order = {id(ex): i for i, ex in enumerate(examples)}
    for name in out:  # restore file order within each split
        out[name].sort(key=lambda ex: order[id(ex)])
    return out


def _label_str(value: Any, where: str, column: str) -> str:
    """A label value as a string ("3" for 3 or 3.0); `UserError` for empty or non-scalar values."""
    if isinstance(value, bool) or value is None or isinstance(value, (list, dict)):
        raise UserError(f"{where}: bad label in column '{column}': {value!r}")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip()
    if not text:
        raise UserError(f"{where}: empty label in column '{column}'")
    return text


def sort_labels(labels: set[str]) -> list[str]:
    """Labels sorted numerically when all are integers, else as strings."""
    if all(re.fullmatch(r"[+-]?\d+", x) for x in labels):
        return sorted(labels, key=lambda x: (int(x), x))
    return sorted(labels)


class ClassificationDataModule(TokenizedDataModule):
    """Sequence classification data from CSV/TSV/JSONL files or the embedded stdlib-package task.

    With no files, uses `stdlib_tasks.package_classification` ("which stdlib package is this
    function from"). With only `train_file`, val/test are a deterministic stratified split of it.
    With `train_file` and `val_file` but no `test_file`, test is split from train by
    `test_fraction` (or is the val set when `test_fraction=0`).
    """

    EMBEDDED_CLASSES = 6
    EMBEDDED_MAX_PER_CLASS = 300

    def __init__(
        self,
        train_file: str | None = None,
        val_file: str | None = None,
        test_file: str | None = None,
        text_column: str = "text",
        label_column: str = "label",
        max_length: int = 256,
        batch_size: int = 16,
        num_workers: NonNegative = 0,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        seed: int = 0,
        task: str = "stdlib_packages",
        tokenizer: Any = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["tokenizer"])
        self.train_file, self.val_file, self.test_file = train_file, val_file, test_file
        self.text_column, self.label_column = text_column, label_column
        self.max_length, self.batch_size, self.num_workers = max_length, batch_size, num_workers
        self.val_fraction, self.test_fraction, self.seed, self.task = val_fraction, test_fraction, seed, task
        self.tokenizer = tokenizer
        self._validate()
        self._examples: dict[str, list[Example]] | None = None
        self._labels: list[str] | None = None
        self._encoded: dict[str, list[dict]] | None = None

    def _validate(self) -> None:
        """Cheap checks of the keys and file existence, so that mistakes surface before training."""
        self.check_files()
        if self.train_file is None and self.task not in TASKS:
            raise UserError(
                f"data.task={self.task!r} is not an embedded task; choose one of: {', '.join(TASKS)}"
            )
        if not isinstance(self.max_length, int) or self.max_length < 2:
            raise UserError(f"data.max_length must be an integer >= 2, got {self.max_length!r}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise UserError(f"data.batch_size must be an integer >= 1, got {self.batch_size!r}")
        for key in ("val_fraction", "test_fraction"):
            value = getattr(self, key)  # getattr: this module's own setting of that config key
            if not 0 <= value < 1:
                raise UserError(f"data.{key} must be in [0, 1), got {value}")
        if self.val_fraction + self.test_fraction >= 1:
            raise UserError("data.val_fraction + data.test_fraction must be below 1")
        if self.train_file is not None and self.val_file is None and self.val_fraction == 0:
            raise UserError("data.val_fraction=0 and no data.val_file: there is nothing to validate on")

    # ---- parsing (no tokenizer needed) -------------------------------------------------------

    def _read(self, path: str) -> list[Example]:
        """Examples of one table, with `path:line` errors for missing columns and empty cells."""
        rows = read_rows(path)
        require_columns(
            path, rows, [self.text_column, self.label_column], ["data.text_column", "data.label_column"]
        )
        out = []
        for row in rows:
            where = f"{path}:{row[LINE]}"
            for column in (self.text_column, self.label_column):
                if column not in row:
                    raise UserError(f"{where}: missing column '{column}'")
            text = row[self.text_column]
            if isinstance(text, (int, float)) and not isinstance(text, bool):
                text = str(text)
            if not isinstance(text, str):
                kind = type(text).__name__
                raise UserError(f"{where}: column '{self.text_column}' must be text, got {kind}")
            if not text.strip():
                raise UserError(f"{where}: empty text in column '{self.text_column}'")
            out.append(Example(text, _label_str(row[self.label_column], where, self.label_column), where))
        return out

    def _load(self) -> dict[str, list[Example]]:
        """Parse and split the data once; builds the label set from train and checks val/test."""
        if self._examples is not None:
            return self._examples
        if self.train_file is None:
            parts = stdlib_tasks.package_classification(
                n_classes=self.EMBEDDED_CLASSES, max_per_class=self.EMBEDDED_MAX_PER_CLASS, seed=self.seed,
                val_fraction=self.val_fraction or 0.1, test_fraction=self.test_fraction or 0.1,
            )
            examples = {
                name: [Example(r["text"], r["label"], f"stdlib:{self.task}:{name}:{i}")
                       for i, r in enumerate(rows)]
                for name, rows in parts.items()
            }
        else:
            train = self._read(self.train_file)
            fractions = {}
            if self.val_file is None:
                fractions["val"] = self.val_fraction
            if self.test_file is None and self.test_fraction > 0:
                fractions["test"] = self.test_fraction
            examples = stratified_split(train, fractions, self.seed) if fractions else {"train": train}
            if self.val_file is not None:
                examples["val"] = self._read(self.val_file)
            if self.test_file is not None:
                examples["test"] = self._read(self.test_file)
            elif "test" not in examples:
                examples["test"] = examples["val"]
            if not examples["val"]:
                raise UserError(
                    f"{self.train_file}: too few rows to split off a val set; add rows or set data.val_file"
                )
        labels = sort_labels({ex.label for ex in examples["train"]})
        if len(labels) < 2:
            raise UserError(
                f"{self.train_file}: the training data has only one label ({labels[0]}); need at least 2"
            )
        known = set(labels)
        for name in ("val", "test"):
            for ex in examples[name]:
                if ex.label not in known:
                    shown = ", ".join(labels[:20]) + (", ..." if len(labels) > 20 else "")
                    raise UserError(
                        f"{ex.where}: label '{ex.label}' does not occur in the training data "
                        f"(labels: {shown})"
                    )
        self._examples, self._labels = examples, labels
        return examples

    @property
    def labels(self) -> list[str]:
        """The label names (as strings) in class-index order, built from the training split."""
        self._load()
        assert self._labels is not None
        return self._labels

    @property
    def class_names(self) -> list[str]:
        return self.labels

    @property
    def dims(self) -> dict[str, Any]:
        """What the model needs to know about the data: the number of labels and their names."""
        return {**super().dims, "num_labels": len(self.labels), "labels": list(self.labels)}

    @property
    def test_texts(self) -> list[str]:
        """Texts of the test split, in the order of `test_dataloader` / `predict_dataloader`."""
        return [ex.text for ex in self._load()["test"]]

    @property
    def test_labels(self) -> list[str]:
        """Gold labels (strings) of the test split, aligned with `test_texts`."""
        return [ex.label for ex in self._load()["test"]]

    # ---- Lightning hooks ------------------------------------------------------------------

    def setup(self, stage: str | None = None) -> None:
        """Parse the data (once) and tokenize every split with truncation to `max_length`."""
        examples = self._load()
        if self._encoded is not None:
            return
        if self.tokenizer is None:
            raise RuntimeError(
                "ClassificationDataModule needs a tokenizer: call set_tokenizer(tok) before setup()"
            )
        index = {label: i for i, label in enumerate(self.labels)}
        self._encoded = {}
        for name in SPLITS:
            texts = [ex.text for ex in examples[name]]
            ids = []
            if texts:
                ids = self.tokenizer(texts, truncation=True, max_length=self.max_length)["input_ids"]
            self._encoded[name] = [
                {"input_ids": list(x), "label": index[ex.label]} for x, ex in zip(ids, examples[name])
            ]

    def predict_dataloader(self) -> DataLoader:
        """The test split in order, so predictions line up with `test_texts`."""
        return self._loader("test", shuffle=False)
