"""The composed config as a rich tree: printed at start-up and saved in the run directory."""

from __future__ import annotations

import io

import yaml
from rich.console import Console
from rich.syntax import Syntax
from rich.tree import Tree

# Sections shown first, in this order; the rest follow.
ORDER = ("data", "model", "module", "optimizer", "scheduler", "trainer", "tokenizer", "finetune",
         "callbacks", "logger", "paths")


def config_tree(config: dict) -> Tree:
    tree = Tree("config", guide_style="dim")
    sections = [k for k in ORDER if k in config] + [k for k in config if k not in ORDER]
    top = {k: v for k, v in config.items() if not isinstance(v, dict)}
    for name in sections:
        value = config[name]
        if not isinstance(value, dict):
            continue
        branch = tree.add(f"[bold]{name}[/bold]")
        branch.add(Syntax(yaml.safe_dump(value, sort_keys=False).rstrip() or "{}", "yaml",
                          theme="ansi_dark", background_color="default"))
    if top:
        branch = tree.add("[bold]run[/bold]")
        branch.add(Syntax(yaml.safe_dump(top, sort_keys=False).rstrip(), "yaml", theme="ansi_dark",
                          background_color="default"))
    return tree


def render_tree(config: dict, color: bool = False, width: int = 110) -> str:
    buffer = io.StringIO()
    Console(file=buffer, force_terminal=color, width=width, color_system="standard" if color else None
            ).print(config_tree(config))
    return buffer.getvalue()
