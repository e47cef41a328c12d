"""`lmforge prepare "inputs=[crawl/*.warc.gz]" output_dir=out/web`: raw sources to clean, deduplicated
JSONL.gz shards plus stats.json, through a datatrove pipeline on the configured executor."""

from __future__ import annotations

from omegaconf import DictConfig


def main(cfg: DictConfig) -> None:
    import json
    from pathlib import Path

    from hydra.utils import instantiate

    from lmforge.config.validate import validate
    from lmforge.errors import UserError
    from lmforge.extras import require

    config = validate(cfg, "prepare")
    if config["print_config"]:
        import sys

        from lmforge.config.tree import render_tree

        print(render_tree(config, color=sys.stdout.isatty()))
    require("datatrove", "web", "lmforge prepare")
    from lmforge.prepare import output, stats
    from lmforge.prepare.pipeline import build_stages, check_keys
    from lmforge.prepare.sources import resolve_inputs

    spec = config["prepare"]
    check_keys(spec)
    out = Path(config["output_dir"]).expanduser().resolve()
    files = [f for f in resolve_inputs(config["inputs"]) if out not in f.parents]  # not its own output
    if not files:
        raise UserError(f"inputs: every file they match is inside output_dir={out}")
    executor = instantiate(config["executor"])
    # The executor's kind and worker count do not change the result; its task count shards it.
    fingerprint = output.fingerprint({"prepare": spec, "tasks": executor.tasks}, files)
    if output.claim(out, fingerprint, config["overwrite"]) == "reuse":
        print(f"prepare: {out} already holds this prepare's output (same settings and inputs): reused")
    else:
        steps = {key: instantiate(node) for key, node in spec.items() if node is not None}
        stages = build_stages(steps, files, out, executor.tasks, fingerprint)
        if not executor.run(stages, out / output.WORK / "logs"):
            print(f"prepare: submitted {len(stages)} stages; the output appears in {out} when they finish "
                  "(run the same command again to see its figures)")
            return
    figures = json.loads((out / output.STATS).read_text())
    print("\n".join(stats.lines(figures)))
    print(f"output: {out}  (train on it: lmforge train data.paths=[{config['output_dir']}])")

