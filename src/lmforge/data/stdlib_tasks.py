"""Embedded fine-tuning tasks built from the running interpreter's standard library.

Why: tests and default runs need real text tasks with no network. The standard library's `.py`
files are always there.

Derivation (deterministic for a given Python version and `seed`):
- Files: every `.py` under `sysconfig.get_paths()["stdlib"]`, walked in sorted order, skipping
  `site-packages`, `__pycache__` and test directories (`test`, `tests`, `idle_test`).
- Functions: parsed with `ast`; module-level functions and methods of (nested) classes, not
  functions nested inside functions (so no function's source is part of another's). The source
  is the `def` line to the end of the body (decorators dropped), dedented. Functions shorter
  than 40 characters or longer than `max_chars` are dropped; identical sources are kept once.
- Order and split: every item gets the key `sha256(f"{seed}\\0{text}")`; items are sorted by it
  and the first ones go to train, then val, then test (per class for the classification task, so
  the split is stratified and balanced). A function therefore lands in exactly one split.
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
import hashlib
import os
import sysconfig
import textwrap

SKIP_DIRS = {"site-packages", "dist-packages", "__pycache__", "test", "tests", "idle_test"}
PACKAGES = (
    "email", "asyncio", "xml", "unittest", "multiprocessing", "http", "logging", "urllib",
    "importlib", "tkinter", "lib2to3", "idlelib", "ctypes", "concurrent", "json",
)
MIN_CHARS = 40
MIN_PER_PACKAGE = 150

Split = dict[str, list[dict]]


def stdlib_dir() -> str:
    """The directory of the running interpreter's standard library."""
    return sysconfig.get_paths()["stdlib"]


def _py_files(root: str) -> list[str]:
    """`.py` files under `root` in sorted order, skipping tests and site-packages."""
    files: list[str] = []
    for here, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS)
        files.extend(os.path.join(here, n) for n in sorted(names) if n.endswith(".py"))
    return files


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


def _key(seed: int, text: str) -> str:
    """The deterministic order key of an item: a hash of the seed and its text."""
    return hashlib.sha256(f"{seed}\0{text}".encode("utf-8")).hexdigest()


def _split(items: list[dict], val_fraction: float, test_fraction: float) -> Split:
    """Cut an already ordered list into train/val/test by position (val and test get >= 1 if possible)."""
    n = len(items)
    n_val = round(n * val_fraction) if n >= 3 else 0
    n_test = round(n * test_fraction) if n >= 3 else 0
    if val_fraction > 0 and n >= 3:
        n_val = max(n_val, 1)
    if test_fraction > 0 and n >= 3:
        n_test = max(n_test, 1)
    n_train = n - n_val - n_test
    return {
        "train": items[:n_train],
        "val": items[n_train : n_train + n_val],
        "test": items[n_train + n_val :],
    }


def _package_sources(package: str, max_chars: int) -> list[str]:
    """Distinct function sources of one stdlib package, within the length limits."""
    root = os.path.join(stdlib_dir(), package)
    if not os.path.isdir(root):
        return []
    seen: dict[str, None] = {}
    for path in _py_files(root):
        for source, _, _ in _file_functions(path):
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
        unique = sorted((s for s in sources if counts[s] == 1), key=lambda s: _key(seed, s))[:per_class]
        parts = _split([{"text": s, "label": package} for s in unique], val_fraction, test_fraction)
        for name, items in parts.items():
            out[name].extend(items)
    for name in out:  # interleave classes in a deterministic, seed-dependent order
        out[name].sort(key=lambda item: _key(seed, item["text"]))
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
    for path in _py_files(stdlib_dir()):
        for _, prompt, response in _file_functions(path):
            if not prompt or len(prompt) > max_chars or len(response) > max_chars:
                continue
            if len(response.strip()) < 10 or prompt in prompts or response in responses:
                continue
            prompts.add(prompt)
            responses.add(response)
            items.append({"prompt": prompt, "response": response})
    items.sort(key=lambda item: _key(seed, item["prompt"] + "\0" + item["response"]))
    return _split(items[:max_examples], val_fraction, test_fraction)
