"""Supervised fine-tuning (instruction) data: prompt/response pairs with loss on the response only.

Each example is `template.format(prompt=...)` followed by the response and the eos token.
`labels` equal `input_ids` on response (and eos) positions and -100 elsewhere (prompt, padding);
the model shifts them itself, Hugging Face style. Optional packing puts several examples in one
`max_length` row, each still masked and ended by eos.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lmforge.config.schema import NonNegative
from lmforge.data import stdlib_tasks
from lmforge.data.splits import split
from lmforge.data.tables import LINE, columns, read_rows
from lmforge.data.tokenized import IGNORE, TokenizedDataModule
from lmforge.errors import UserError

ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class Pair:
    """One prompt/response pair and where it came from (`path:line`)."""

    prompt: str
    response: str
    where: str


def render_messages(messages: Any, where: str) -> tuple[str, str]:
    """(prompt, response) of a chat: the last assistant message is the response, the rest the prompt.

    A lone user message becomes the prompt as is; otherwise turns are written "Role: content",
    separated by blank lines.
    """
    if not isinstance(messages, list) or not messages:
        raise UserError(f"{where}: 'messages' must be a non-empty list of {{\"role\", \"content\"}} objects")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise UserError(
                f"{where}: messages[{i}] must be {{\"role\": one of {'/'.join(ROLES)}, \"content\": text}}, "
                f"got {m!r:.80}"
            )
    if messages[-1]["role"] != "assistant":
        raise UserError(f"{where}: the last message must be the assistant's (it is the response to learn)")
    before, response = messages[:-1], messages[-1]["content"]
    if len(before) == 1 and before[0]["role"] == "user":
        return before[0]["content"], response
    prompt = "\n\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in before)
    return prompt, response


def read_pairs(path: str) -> list[Pair]:
    """Prompt/response pairs of a table: `prompt`/`response` columns or a `messages` list per row."""
    rows = read_rows(path)
    out = []
    for row in rows:
        where = f"{path}:{row[LINE]}"
        if "messages" in row:
            prompt, response = render_messages(row["messages"], where)
        else:
            for key in ("prompt", "response"):
                if key not in row:
                    have = ", ".join(k for k in row if k != LINE) or "(nothing)"
                    raise UserError(
                        f"{where}: missing '{key}' (need 'prompt' and 'response', or 'messages'; "
                        f"the row has: {have})"
                    )
                if not isinstance(row[key], str):
                    raise UserError(f"{where}: '{key}' must be text, got {type(row[key]).__name__}")
            prompt, response = row["prompt"], row["response"]
        if not response.strip():
            raise UserError(f"{where}: empty response")
        out.append(Pair(prompt, response, where))
    if not out:
        raise UserError(f"{path}: no examples; columns are: {', '.join(columns(rows))}")
    return out


def encode_pair(
    prompt_ids: list[int], response_ids: list[int], eos_id: int, max_length: int
) -> dict[str, list[int]]:
    """`input_ids` = prompt + response + eos and `labels` masking the prompt, cut to `max_length`.

    When too long, the response keeps at least half of `max_length` (if it has that many tokens)
    and the prompt loses tokens from its start, so every example has some response to learn.
    """
    response_ids = list(response_ids) + [eos_id]
    if len(prompt_ids) + len(response_ids) > max_length:
        keep_response = max(max_length - len(prompt_ids), min(len(response_ids), max_length // 2))
        keep_prompt = max_length - keep_response
        response_ids = response_ids[:keep_response]
        prompt_ids = prompt_ids[len(prompt_ids) - keep_prompt :] if keep_prompt > 0 else []
    return {
        "input_ids": list(prompt_ids) + response_ids,
        "labels": [IGNORE] * len(prompt_ids) + response_ids,
    }


def pack(examples: list[dict[str, list[int]]], max_length: int) -> list[dict[str, list[int]]]:
    """Greedily concatenate consecutive examples into rows of at most `max_length` tokens.

    Each example already ends with eos (its separator) and keeps its own label mask.
    """
    rows: list[dict[str, list[int]]] = []
    ids: list[int] = []
    labels: list[int] = []
    for ex in examples:
        if ids and len(ids) + len(ex["input_ids"]) > max_length:
            rows.append({"input_ids": ids, "labels": labels})
            ids, labels = [], []
        ids = ids + ex["input_ids"]
        labels = labels + ex["labels"]
    if ids:
        rows.append({"input_ids": ids, "labels": labels})
    return rows


class SFTDataModule(TokenizedDataModule):
    """Instruction-tuning data from JSONL (or CSV/TSV) files, or the embedded stdlib docstring task.

    With no files, uses `stdlib_tasks.docstring_sft` (docstring -> function body). With only
    `train_file`, val is a deterministic `val_fraction` of it; without `test_file`, test is val.
    """

    EMBEDDED_MAX_EXAMPLES = 2000
    N_VAL_PROMPTS = 4

    def __init__(
        self,
        train_file: str | None = None,
        val_file: str | None = None,
        test_file: str | None = None,
        template: str = "{prompt}\n### Response:\n",
        max_length: int = 256,
        batch_size: int = 8,
        num_workers: NonNegative = 0,
        val_fraction: float = 0.1,
        seed: int = 0,
        packing: bool = False,
        tokenizer: Any = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["tokenizer"])
        self.train_file, self.val_file, self.test_file = train_file, val_file, test_file
        self.template, self.max_length, self.batch_size = template, max_length, batch_size
        self.num_workers, self.val_fraction = num_workers, val_fraction
        self.seed, self.packing = seed, packing
        self.tokenizer = tokenizer
        self._validate()
        self._pairs: dict[str, list[Pair]] | None = None
        self._encoded: dict[str, list[dict]] | None = None

    def _validate(self) -> None:
        """Cheap checks of keys, template and file existence before any training starts."""
        self.check_files()
        marker = "\x00PROMPT\x00"
        try:
            rendered = self.template.format(prompt=marker)
        except (KeyError, IndexError, ValueError) as e:
            raise UserError(
                f"data.template={self.template!r} is not a valid format string ({type(e).__name__}: {e}); "
                "use {prompt} and write {{ }} for literal braces"
            ) from None
        if marker not in rendered:
            raise UserError(f"data.template={self.template!r} must contain {{prompt}}")
        if not isinstance(self.max_length, int) or self.max_length < 4:
            raise UserError(f"data.max_length must be an integer >= 4, got {self.max_length!r}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise UserError(f"data.batch_size must be an integer >= 1, got {self.batch_size!r}")
        if not 0 <= self.val_fraction < 1:
            raise UserError(f"data.val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.train_file is not None and self.val_file is None and self.val_fraction == 0:
            raise UserError("data.val_fraction=0 and no data.val_file: there is nothing to validate on")

    def render(self, prompt: str) -> str:
        """The model input for `prompt`: the template filled in (generation continues after it)."""
        return self.template.format(prompt=prompt)

    def _load(self) -> dict[str, list[Pair]]:
        """Read and split the pairs once (no tokenizer needed)."""
        if self._pairs is not None:
            return self._pairs
        if self.train_file is None:
            parts = stdlib_tasks.docstring_sft(
                max_examples=self.EMBEDDED_MAX_EXAMPLES, seed=self.seed, val_fraction=self.val_fraction or 0.1
            )
            pairs = {
                name: [Pair(r["prompt"], r["response"], f"stdlib:docstring_sft:{name}:{i}")
                       for i, r in enumerate(rows)]
                for name, rows in parts.items()
            }
        else:
            train = read_pairs(self.train_file)
            if self.val_file is not None:
                pairs = {"train": train, "val": read_pairs(self.val_file)}
            else:
                pairs = split(train, {"val": self.val_fraction}, self.seed, min_each=1,
                              key=lambda p: f"{p.prompt}\0{p.response}")
                if not pairs["val"]:
                    raise UserError(
                        f"{self.train_file}: too few distinct examples to split off a val set; "
                        "add rows or set data.val_file"
                    )
            pairs["test"] = read_pairs(self.test_file) if self.test_file is not None else pairs["val"]
        self._pairs = pairs
        return pairs

    @property
    def val_prompts(self) -> list[str]:
        """A few fixed validation prompts rendered with the template, for sample generation."""
        return [self.render(p.prompt) for p in self._load()["val"][: self.N_VAL_PROMPTS]]

    def test_pairs(self, n: int) -> list[tuple[str, str]]:
        """The first `n` test pairs as (prompt rendered with the template, reference response)."""
        return [(self.render(p.prompt), p.response) for p in self._load()["test"][:n]]

    def encode(self, pairs: list[Pair]) -> list[dict[str, list[int]]]:
        """Tokenize pairs into `{"input_ids", "labels"}` (unpacked, unpadded)."""
        tok = self.tokenizer
        if tok is None:
            raise RuntimeError("SFTDataModule needs a tokenizer: call set_tokenizer(tok) before setup()")
        eos = tok.eos_token_id
        if eos is None:
            raise UserError("the tokenizer has no eos token; SFT needs one to end each response")
        if not pairs:
            return []
        bos = tok.bos_token_id
        prefix = [bos] if bos is not None and bos != eos else []
        prompts = tok([self.render(p.prompt) for p in pairs], add_special_tokens=False)["input_ids"]
        responses = tok([p.response for p in pairs], add_special_tokens=False)["input_ids"]
        return [
            encode_pair(prefix + list(p), list(r), eos, self.max_length) for p, r in zip(prompts, responses)
        ]

    def setup(self, stage: str | None = None) -> None:
        """Read the data (once) and tokenize every split; pack rows when `packing` is on."""
        pairs = self._load()
        if self._encoded is not None:
            return
        self._encoded = {}
        for name in ("train", "val", "test"):
            examples = self.encode(pairs[name])
            self._encoded[name] = pack(examples, self.max_length) if self.packing else examples
