"""Embedded fine-tuning tasks built from the running interpreter's standard library.

Why: tests and default runs need real text tasks with no network. The standard library's `.py`
files are always there.

Derivation (deterministic for a given Python version and `seed`):
- Files: `lmforge.data.corpus.stdlib_files` (every `.py` of the standard library in sorted order,
  skipping `site-packages`, `__pycache__` and test directories), the pretraining corpus's walker.
- Functions: parsed with `ast`; module-level functions and methods of (nested) classes, not
  functions nested inside functions (so no function's source is part of another's). The source
  is the `def` line to the end of the body (decorators dropped), dedented. Functions shorter
  than 40 characters or longer than `max_chars` are dropped; identical sources are kept once.
- Order and split: `lmforge.data.splits.split`: items are ordered by `sha256(f"{seed}\\0{text}")`,
  the first ones go to val, then test, the rest to train (per class for the classification task,
  so the split is stratified and balanced). A function therefore lands in exactly one split.
- `package_classification`: text = function source, label = top-level package name
  (e.g. "email", "asyncio"), the first `n_classes` of a fixed preference list of packages with
  at least 150 functions;
  each class gets the same number of functions (at most `max_per_class`).
- `docstring_sft`: functions whose body starts with a docstring and has more after it;
  prompt = signature lines + docstring, response = the rest of the body (same indentation as
  in the dedented function, ending with a newline). Items with an identical prompt or response
  are kept once.
Parsed files are cached in memory only (parsing the whole library takes about 2 s).
"""

from __future__ import annotations

import ast
import functools
import textwrap

from lmforge.data.corpus import stdlib_dir, stdlib_files
from lmforge.data.splits import hash_key, split

PACKAGES = (
    "email", "asyncio", "xml", "unittest", "multiprocessing", "http", "logging", "urllib",
    "importlib", "tkinter", "lib2to3", "idlelib", "ctypes", "concurrent", "json",
)
MIN_CHARS = 40
MIN_PER_PACKAGE = 150

Split = dict[str, list[dict]]


def _functions(tree: ast.Module) -> list[ast.FunctionDef | ast.AsyncFunctionDef]:
    """Module-level functions and class methods (recursing into classes, not into functions)."""
    out: list = []
    stack: list[list[ast.stmt]] = [tree.body]
    while stack:
        for node in stack.pop(0):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                out.append(node)
            elif isinstance(node, ast.ClassDef):
                stack.append(node.body)
    return out


@functools.lru_cache(maxsize=None)
def _file_functions(path: str) -> tuple[tuple[str, str, str], ...]:
    """(source, prompt, response) for each function of one file; prompt/response "" without docstring.

    Cached in memory: each file is parsed at most once per process.
    """
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        tree = ast.parse(text)
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
        return ()
    lines = text.splitlines()
    out = []
    for node in _functions(tree):
        start, end = node.lineno - 1, node.end_lineno or node.lineno
        source = textwrap.dedent("\n".join(lines[start:end])) + "\n"
        prompt = response = ""
        body = node.body
        first = body[0]
        if (
            len(body) > 1
            and isinstance(first, ast.Expr)
            and isinstance(first.value, ast.Constant)
            and isinstance(first.value.value, str)
            and first.lineno > node.lineno
            and first.end_lineno is not None
            and body[1].lineno > first.end_lineno
        ):
            split_at = first.end_lineno - start  # lines of the dedented source up to the docstring
            src_lines = source.splitlines()
            prompt = "\n".join(src_lines[:split_at])
            response = "\n".join(src_lines[split_at:]).strip("\n") + "\n"
            if not response.strip():
                prompt = response = ""
        out.append((source, prompt, response))
    return tuple(out)


def _split(items: list[dict], seed: int, key, val_fraction: float, test_fraction: float) -> Split:
    """Train/val/test of already distinct items (val and test get at least one when asked for)."""
    return split(items, {"val": val_fraction, "test": test_fraction}, seed, key=key, min_each=1)


def _package_sources(package: str, max_chars: int) -> list[str]:
    """Distinct function sources of one stdlib package, within the length limits."""
    if not (stdlib_dir() / package).is_dir():
        return []
    seen: dict[str, None] = {}
    for path in stdlib_files(package):
        for source, _, _ in _file_functions(str(path)):
            if MIN_CHARS <= len(source) <= max_chars:
                seen.setdefault(source, None)
    return list(seen)


def package_classification(
    n_classes: int = 6,
    max_per_class: int = 300,
    seed: int = 0,
    max_chars: int = 1500,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
) -> Split:
    """Train/val/test lists of {"text": function source, "label": stdlib package name}.

    Classes are the first `n_classes` (4 to 8 make sense) packages of `PACKAGES` present with at
    least `MIN_PER_PACKAGE` functions; every class gets min(max_per_class, smallest class size)
    functions, split per class.
    """
    if not 2 <= n_classes <= len(PACKAGES):
        raise ValueError(f"n_classes must be in 2..{len(PACKAGES)}, got {n_classes}")
    chosen: dict[str, list[str]] = {}
    for package in PACKAGES:
        sources = _package_sources(package, max_chars)
        if len(sources) >= MIN_PER_PACKAGE:
            chosen[package] = sources
        if len(chosen) == n_classes:
            break
    if len(chosen) < n_classes:
        raise RuntimeError(
            f"only {len(chosen)} standard-library packages with enough functions in {stdlib_dir()}"
        )
    # A source that occurs in two packages would be ambiguous and could cross splits: drop it.
    counts: dict[str, int] = {}
    for sources in chosen.values():
        for s in sources:
            counts[s] = counts.get(s, 0) + 1
    per_class = min(max_per_class, min(sum(counts[s] == 1 for s in v) for v in chosen.values()))
    out: Split = {"train": [], "val": [], "test": []}
    for package, sources in chosen.items():
        unique = sorted((s for s in sources if counts[s] == 1), key=lambda s: hash_key(seed, s))[:per_class]
        parts = _split([{"text": s, "label": package} for s in unique], seed, lambda item: item["text"],
                       val_fraction, test_fraction)
        for name, items in parts.items():
            out[name].extend(items)
    for name in out:  # interleave classes in a deterministic, seed-dependent order
        out[name].sort(key=lambda item: hash_key(seed, item["text"]))
    return out


def docstring_sft(
    max_examples: int = 2000,
    seed: int = 0,
    max_chars: int = 1500,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
) -> Split:
    """Train/val/test lists of {"prompt": signature + docstring, "response": function body}.

    Taken from every non-test stdlib file; prompts and responses each at most `max_chars`.
    """
    items: list[dict] = []
    prompts: set[str] = set()
    responses: set[str] = set()
    for path in stdlib_files():
        for _, prompt, response in _file_functions(str(path)):
            if not prompt or len(prompt) > max_chars or len(response) > max_chars:
                continue
            if len(response.strip()) < 10 or prompt in prompts or response in responses:
                continue
            prompts.add(prompt)
            responses.add(response)
            items.append({"prompt": prompt, "response": response})
    def key(item: dict) -> str:
        return item["prompt"] + "\0" + item["response"]

    items.sort(key=lambda item: hash_key(seed, key(item)))
    return _split(items[:max_examples], seed, key, val_fraction, test_fraction)
