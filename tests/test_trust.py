"""A run folder, a checkpoint or an init_from from someone else runs no code and writes nothing.

Each payload below creates MARKER if anything builds, imports or unpickles it; every route (eval,
generate, export, train's init_from, a fine-tuned run's parent) must refuse it first, in one line
naming the file, the key and the target, exit 2. The base is the finished MLP run, its config edited
(generate and export check only the module's name before building the model, so an MLP run named a
causal LM reaches the model section as a real language-model run would).
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from conftest import cli, ok, one_line_error

CAUSAL = "lmforge.modules.causal_lm.CausalLMModule"


class Touch:
    """Unpickling this creates `path`: what a malicious pickle would do, harmlessly."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return pathlib.Path.touch, (pathlib.Path(self.path),)


def edit_run(mlp_run: Path, dest: Path, **sections) -> Path:
    """A copy of the MLP run at `dest` whose saved config has `sections` replaced."""
    shutil.copytree(mlp_run, dest)
    config_file = dest / ".hydra" / "config.yaml"
    config = yaml.safe_load(config_file.read_text())
    config.update(sections)
    config_file.write_text(yaml.safe_dump(config))
    return dest


def hub_repo(folder: Path, marker: Path) -> Path:
    """A torch.hub repository whose hubconf.py creates `marker` when imported."""
    folder.mkdir()
    (folder / "hubconf.py").write_text(f"import pathlib\npathlib.Path({str(marker)!r}).touch()\n\ndef m():\n    return 1\n")
    return folder


def remote_code_model(folder: Path, marker: Path) -> Path:
    """A Hugging Face model directory whose custom configuration .py creates `marker` when imported."""
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({
        "model_type": "evil", "architectures": ["EvilModel"],
        "auto_map": {"AutoConfig": "configuration_evil.EvilConfig", "AutoModelForCausalLM": "modeling_evil.EvilModel"}}))
    code = f"import pathlib\npathlib.Path({str(marker)!r}).touch()\n"
    (folder / "configuration_evil.py").write_text(
        code + "from transformers import PretrainedConfig\n\nclass EvilConfig(PretrainedConfig):\n    model_type = 'evil'\n")
    (folder / "modeling_evil.py").write_text(code + "class EvilModel:\n    pass\n")
    return folder


def payloads(tmp: Path, marker: Path, host: str, param: str) -> dict[str, tuple[dict, str, str]]:
    """name -> (a `_target_` node that would run code or write `marker`, the key and the target the
    refusal names); `host` (an allowed target) and its parameter `param` carry the smuggled ones."""
    torch.save(Touch(marker), tmp / "payload.pt")
    save = {"_target_": "torch.save", "obj": "pwned", "f": str(marker)}
    return {
        "torch_load": ({"_target_": "torch.load", "f": str(tmp / "payload.pt"), "weights_only": False},
                       "._target_", "torch.load"),
        "hub": ({"_target_": "torch.hub.load", "repo_or_dir": str(hub_repo(tmp / "hub", marker)), "model": "m",
                 "source": "local", "trust_repo": True}, "._target_", "torch.hub.load"),
        "torch_save": (save, "._target_", "torch.save"),
        "remote_code": ({"_target_": "lmforge.models.causal_lm.pretrained", "trust_remote_code": True,
                         "path": str(remote_code_model(tmp / "remote", marker))}, ".trust_remote_code", "True"),
        "nested": ({"_target_": host, param: save}, f".{param}._target_", "torch.save"),
        "args": ({"_target_": host, "_args_": [save]}, "._args_[0]._target_", "torch.save"),
    }


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    return tmp_path / "MARKER"


def refused(proc, source: Path, key: str, target: str, marker: Path) -> str:
    """Assert nothing ran and the refusal is one line naming `source`, `key` and `target`."""
    assert not marker.exists(), "the payload ran"
    line = one_line_error(proc)
    assert str(source) in line and key in line and target in line, line
    return line


@pytest.mark.parametrize("name", ["torch_load", "hub", "torch_save", "nested", "args"])
def test_eval_refuses_a_data_section_that_runs_code(mlp_run: Path, tmp_path: Path, marker: Path, name: str):
    """eval builds the saved data section first: a payload there is refused before it is imported."""
    node, key, target = payloads(tmp_path, marker, "lmforge.data.vision.DigitsDataModule", "batch_size")[name]
    run = edit_run(mlp_run, tmp_path / "run", data=node)
    proc = cli("eval", f"ckpt_path={run}", f"hydra.run.dir={tmp_path / 'out'}", cwd=tmp_path)
    refused(proc, run / ".hydra" / "config.yaml", f"'data{key}'", target, marker)


@pytest.mark.parametrize("command", ["generate", "export"])
@pytest.mark.parametrize("name", ["torch_load", "hub", "torch_save", "remote_code", "nested", "args"])
def test_generate_and_export_refuse_a_model_section_that_runs_code(mlp_run: Path, tmp_path: Path, marker: Path,
                                                                   command: str, name: str):
    node, key, target = payloads(tmp_path, marker, "lmforge.models.mlp.MLP", "input_size")[name]
    run = edit_run(mlp_run, tmp_path / "run", model=node, module={"_target_": CAUSAL})
    extra = [f"export_dir={tmp_path / 'export'}"] if command == "export" else []
    proc = cli(command, f"ckpt_path={run}", *extra, cwd=tmp_path)
    refused(proc, run / ".hydra" / "config.yaml", f"'model{key}'", target, marker)
    assert not (tmp_path / "export").exists()


def lone_checkpoint(mlp_run: Path, dest: Path, **sections) -> Path:
    """The MLP run's last checkpoint alone (no run directory around it), its embedded config edited."""
    ckpt = torch.load(mlp_run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    ckpt["lmforge"]["config"].update(sections)
    torch.save(ckpt, dest)
    return dest


@pytest.mark.parametrize("command", ["eval", "generate", "export"])
def test_a_lone_checkpoint_with_a_malicious_embedded_config_is_refused(mlp_run: Path, tmp_path: Path,
                                                                      marker: Path, command: str):
    node = payloads(tmp_path, marker, "", "")["torch_save"][0]
    ckpt = lone_checkpoint(mlp_run, tmp_path / "lone.ckpt", data=node, model=node, module={"_target_": CAUSAL})
    extra = {"eval": [f"hydra.run.dir={tmp_path / 'out'}"], "export": [f"export_dir={tmp_path / 'export'}"]}
    proc = cli(command, f"ckpt_path={ckpt}", *extra.get(command, []), cwd=tmp_path)
    refused(proc, ckpt, "._target_", "torch.save", marker)


def test_a_fine_tuned_run_whose_parent_is_malicious_is_refused(mlp_run: Path, tmp_path: Path, marker: Path):
    """Its base model directory gone, the child is rebuilt from its parent run: the parent's config is
    checked like any other before it is built."""
    node = payloads(tmp_path, marker, "", "")["torch_save"][0]
    parent = edit_run(mlp_run, tmp_path / "parent", model=node, module={"_target_": CAUSAL})
    child = edit_run(mlp_run, tmp_path / "child", init_from=str(parent), module={"_target_": CAUSAL},
                     model={"_target_": "lmforge.models.causal_lm.pretrained", "path": str(tmp_path / "gone")})
    proc = cli("generate", f"ckpt_path={child}", cwd=tmp_path)
    line = refused(proc, parent / ".hydra" / "config.yaml", "'model._target_'", "torch.save", marker)
    assert line.startswith(f"error: {child / '.hydra' / 'config.yaml'}: init_from={parent}: "), line


def test_init_from_a_malicious_run_is_refused_before_training(mlp_run: Path, review_files: dict, tmp_path: Path,
                                                              marker: Path):
    node = payloads(tmp_path, marker, "", "")["torch_save"][0]
    parent = edit_run(mlp_run, tmp_path / "parent", model=node, module={"_target_": CAUSAL})
    proc = cli("train", "experiment=finetune_classify", f"init_from={parent}",
               f"data.train_file={review_files['train']}", f"hydra.run.dir={tmp_path / 'out'}", cwd=tmp_path)
    refused(proc, parent / ".hydra" / "config.yaml", "'model._target_'", "torch.save", marker)


def evil_module(cwd: Path, marker: Path, monkeypatch, name: str) -> str:
    """A module `name` in the working directory (where `python -m lmforge` imports from first) that
    creates `marker` when imported and offers a model directory like an installed model package."""
    (cwd / f"{name}.py").write_text(f"import pathlib\npathlib.Path({str(marker)!r}).touch()\n\n"
                                       "def get_model_path():\n    return '.'\n")
    monkeypatch.syspath_prepend(str(cwd))  # what `python -m` does with the working directory
    return name


def test_init_from_pkg_never_imports_a_module_of_the_working_directory(review_files: dict, tmp_path: Path,
                                                                       marker: Path, monkeypatch):
    name = evil_module(tmp_path, marker, monkeypatch, "evilmodels_cli")
    proc = cli("train", "experiment=finetune_classify", f"init_from=pkg:{name}",
               f"data.train_file={review_files['train']}", f"hydra.run.dir={tmp_path / 'out'}", cwd=tmp_path)
    assert not marker.exists(), "the module ran"
    line = one_line_error(proc)
    assert f"init_from=pkg:{name}" in line and "working directory" in line, line


def test_a_saved_init_from_pkg_of_the_working_directory_is_refused(mlp_run: Path, tmp_path: Path, marker: Path,
                                                                   monkeypatch):
    name = evil_module(tmp_path, marker, monkeypatch, "evilmodels_saved")
    child = edit_run(mlp_run, tmp_path / "child", init_from=f"pkg:{name}", module={"_target_": CAUSAL},
                     model={"_target_": "lmforge.models.causal_lm.pretrained", "path": str(tmp_path / "gone")})
    proc = cli("generate", f"ckpt_path={child}", cwd=tmp_path)
    assert not marker.exists(), "the module ran"
    line = one_line_error(proc)
    assert f"{child / '.hydra' / 'config.yaml'}: init_from=pkg:{name}" in line and "working directory" in line, line


@pytest.mark.parametrize("command", ["eval", "generate", "export", "init_from"])
def test_a_checkpoint_that_holds_a_pickle_is_refused(mlp_run: Path, review_files: dict, tmp_path: Path,
                                                     marker: Path, command: str):
    ckpt = torch.load(mlp_run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    ckpt["payload"] = Touch(marker)
    run = edit_run(mlp_run, tmp_path / "run", **({} if command == "eval" else {"module": {"_target_": CAUSAL}}))
    for name in ("best.ckpt", "last.ckpt"):
        torch.save(ckpt, run / "checkpoints" / name)
    args = {"eval": ["eval", f"ckpt_path={run}", f"hydra.run.dir={tmp_path / 'out'}"],
            "generate": ["generate", f"ckpt_path={run}"],
            "export": ["export", f"ckpt_path={run}", f"export_dir={tmp_path / 'export'}"],
            "init_from": ["train", "experiment=finetune_classify", f"init_from={run / 'checkpoints' / 'best.ckpt'}",
                          f"data.train_file={review_files['train']}", f"hydra.run.dir={tmp_path / 'out'}"]}[command]
    proc = cli(*args, cwd=tmp_path)
    assert not marker.exists(), "the pickle ran"
    line = one_line_error(proc)
    assert f"{run / 'checkpoints' / 'best.ckpt'}: refused to load" in line, line


@pytest.mark.parametrize("command", ["eval", "generate"])
def test_a_corrupt_checkpoint_is_called_unreadable(tmp_path: Path, command: str):
    ckpt = tmp_path / "random.ckpt"
    ckpt.write_bytes(os.urandom(4096))
    extra = [f"hydra.run.dir={tmp_path / 'out'}"] if command == "eval" else []
    line = one_line_error(cli(command, f"ckpt_path={ckpt}", *extra, cwd=tmp_path))
    assert f"{ckpt}: not a readable checkpoint" in line and "run code" not in line, line


def test_a_saved_config_writes_and_downloads_nothing_of_its_own(mlp_run: Path, tmp_path: Path):
    """eval of a run whose data section asks for a download into a folder of its choosing: nothing is
    fetched or created there (data.download is off for a saved config), and it evaluates."""
    config = yaml.safe_load((mlp_run / ".hydra" / "config.yaml").read_text())
    elsewhere = tmp_path / "elsewhere"
    run = edit_run(mlp_run, tmp_path / "run", data={**config["data"], "root": str(elsewhere), "download": True})
    out = tmp_path / "out"
    ok(cli("eval", f"ckpt_path={run}", f"hydra.run.dir={out}", cwd=tmp_path))
    assert not elsewhere.exists()
    assert yaml.safe_load((out / ".hydra" / "config.yaml").read_text())["data"]["download"] is False


def test_the_allowlist_is_what_conf_ships_for_the_rebuilt_sections():
    """A preset added to conf/ must read back (its target allowed), and nothing conf/ does not ship is."""
    from lmforge.config import conf_dir
    from lmforge.config.trust import ALLOWED_TARGETS

    shipped = set()
    for group in ("data", "tokenizer", "model", "module", "optimizer", "scheduler", "finetune"):
        for path in (conf_dir() / group).glob("*.yaml"):
            shipped.update(re.findall(r"^_target_:\s*([\w.]+)", path.read_text(), flags=re.M))
    assert shipped == ALLOWED_TARGETS
