"""Which lm-eval tasks a name means: lmforge's bundled tasks (`tasks/` beside this file), the user's task
YAMLs (`harness.include_path`), then lm-eval's own catalogue (indexed only when a name is not local).

A task YAML's relative `data_files` are read beside the YAML when they are there (else from the working
directory, lm-eval's own rule), so a folder of YAMLs and JSON files works from anywhere. A task whose
data must come from the Hugging Face hub, with no network, stops with one line naming it.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, Optional, Sequence

from lmforge.errors import UserError

BUNDLED = Path(__file__).parent / "tasks"
LOCAL_BUILDERS = ("json", "csv", "parquet", "text", "arrow")  # `datasets` builders over local files
LOCAL_FILES_HINT = ("copy its data to local files and point a task YAML in harness.include_path at them "
                    "(dataset_path: json, dataset_kwargs: {data_files: {test: data.jsonl}})")


def include_paths(include_path: Optional[str | Sequence[str]]) -> list[Path]:
    """The bundled tasks' folder, then the user's folders (a name defined twice: the user's wins)."""
    given = [include_path] if isinstance(include_path, (str, Path)) else list(include_path or [])
    paths = [BUNDLED]
    for entry in given:
        path = Path(entry).expanduser()
        if not path.exists():
            raise UserError(f"harness.include_path: {entry}: no such folder or task YAML")
        paths.append(path.resolve())
    return paths


@lru_cache(maxsize=4)
def _manager(paths: tuple[Path, ...], defaults: bool):
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=list(paths), include_defaults=defaults)


def task_manager(names: Sequence[str], include_path=None):
    """A TaskManager that knows every name: the local folders alone when they define them all (fast,
    offline), else with lm-eval's own tasks; an unknown name is one line."""
    paths = tuple(include_paths(include_path))
    local = _manager(paths, False)
    if all(name in local.all_tasks for name in names):
        return local
    manager = _manager(paths, True)
    for name in names:
        if name not in manager.all_tasks:
            raise UserError(f"harness.tasks: no lm-eval task, group or tag named {name!r} (local tasks: "
                            f"{', '.join(local.all_tasks)}; add your own YAMLs with harness.include_path=<dir>)")
    return manager


def spec(manager, name: str) -> Any:
    """What to load for `name`: a task YAML's config with its relative data files made absolute when they
    lie beside the YAML, else the name itself."""
    entry = manager.task_index[name]
    if entry.yaml_path is None or entry.kind.name != "TASK":
        return name
    from lmforge.compat.lm_eval import load_task_yaml

    config = load_task_yaml(entry.yaml_path)
    files = (config.get("dataset_kwargs") or {}).get("data_files")
    if not files:
        return name
    folder = Path(entry.yaml_path).parent

    def beside(file: Any) -> Any:
        if isinstance(file, list):
            return [beside(f) for f in file]
        if isinstance(file, str) and "://" not in file and not Path(file).is_absolute() and (folder / file).exists():
            return str(folder / file)
        return file

    files = {split: beside(f) for split, f in files.items()} if isinstance(files, dict) else beside(files)
    return {**config, "dataset_kwargs": {**config["dataset_kwargs"], "data_files": files}}


def load_tasks(names: Sequence[str], include_path=None) -> tuple[list, Any]:
    """(the built tasks and groups, their TaskManager); a task whose data cannot be had is one line."""
    if not names:
        raise UserError("harness.tasks: give at least one task, e.g. harness.tasks=[lmforge_python_mc]")
    manager = task_manager(names, include_path)
    built: list = []
    for name in names:
        try:
            loaded = manager.load([spec(manager, name)])
        except UserError:
            raise
        except Exception as exc:  # noqa: BLE001 - datasets' network, auth and missing-file errors all end here
            raise UserError(task_data_error(manager, name, exc)) from exc
        built += [loaded["groups"][name]] if name in loaded["groups"] else list(loaded["tasks"].values())
    return built, manager


def task_data_error(manager, name: str, exc: Exception) -> str:
    """One line for a task whose data did not load: the hub offline, or the library's own reason."""
    import os

    entry = manager.task_index.get(name)
    dataset = (entry.cfg or {}).get("dataset_path") if entry is not None and entry.cfg else None
    offline = any(os.environ.get(key, "").lower() in ("1", "true", "on", "yes")
                  for key in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))
    reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    networked = any(word in f"{type(exc).__name__} {reason}".lower()
                    for word in ("offline", "connection", "network", "resolve", "hub"))
    if dataset not in LOCAL_BUILDERS and (offline or networked):
        source = f" ({dataset})" if dataset else ""
        return (f"harness task {name}: its data{source} come from the Hugging Face hub, which cannot be reached "
                f"(offline); {LOCAL_FILES_HINT}")
    return f"harness task {name}: its data did not load ({type(exc).__name__}: {reason})"
