"""The house rules that can be checked mechanically: no import circle (imports inside functions
count), no source file over 400 lines, one file per command; and the suite's own share of the cores."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import torch

import lmforge
from lmforge.config.schema import COMMANDS

PACKAGE = Path(lmforge.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """lmforge module -> the lmforge modules it imports anywhere in its source (functions included)."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # `from lmforge.x import y`: y may be a module of its own, else a name in lmforge.x
                targets = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                           for a in node.names]
            else:
                continue
            graph[name].update(t for t in targets if t in modules and t != name)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for succ in graph[node]:
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_circle_anywhere_in_the_package():
    graph = import_graph()
    assert len(graph) > 40 and sum(map(len, graph.values())) > 60  # the walker really sees the package
    assert cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_source_file_over_400_lines():
    long = {str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 400}
    assert long == {}


def test_one_file_per_command():
    for command in COMMANDS:
        assert (PACKAGE / "commands" / f"{command}.py").is_file(), command
        assert (PACKAGE.parent.parent / "conf" / f"{command}.yaml").is_file() or \
            (PACKAGE / "conf" / f"{command}.yaml").is_file(), command


def test_each_test_process_computes_on_its_share_of_the_cores():
    """Under xdist each worker gets cores / workers torch threads (unless the user set OMP_NUM_THREADS):
    more threads than cores, and a step waits for threads the other worker holds off the CPU."""
    if os.environ["LMFORGE_TESTS_USER_THREADS"]:
        assert os.environ["OMP_NUM_THREADS"] == os.environ["LMFORGE_TESTS_USER_THREADS"]
        return
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    assert torch.get_num_threads() == max(1, (os.cpu_count() or 1) // workers)
