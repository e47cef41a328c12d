"""`lmforge <command> [hydra overrides]`: dispatch to one Hydra app per command.

Kept free of torch/lightning/transformers imports so that `--help` and dispatch are quick; the commands
are those of `lmforge.config.schema.COMMANDS`.
"""

from __future__ import annotations

import difflib
import gc
import os
import sys

USAGE = """usage: lmforge <command> [hydra overrides] [--help] [--cfg job] [-m]

commands:
{commands}

examples:
  lmforge train experiment=mnist_mlp
  lmforge train experiment=mnist_mlp -m model.activation=relu,sigmoid,tanh
  lmforge eval ckpt_path=logs/mnist_mlp/runs/<run>
  lmforge train --help          config groups and options of a command
"""


def usage() -> str:
    from lmforge.config.schema import COMMANDS

    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {spec.summary}" for name, spec in COMMANDS.items()]
    return USAGE.format(commands="\n".join(lines))


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `lmforge` console script; exits with the command's status."""
    args = sys.argv[1:] if argv is None else list(argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage())
        sys.exit(0)
    if args[0] in ("-V", "--version"):
        from lmforge import __version__

        print(f"lmforge {__version__}")
        sys.exit(0)
    from lmforge.config.schema import COMMANDS

    command = args[0]
    if command not in COMMANDS:
        close = difflib.get_close_matches(command, COMMANDS, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        print(f"error: unknown command '{command}'{hint}; commands: {', '.join(COMMANDS)}", file=sys.stderr)
        sys.exit(2)

    # Stop signals get their line and status from here on (lmforge.signals), heavy imports included.
    from lmforge import signals

    replaced = signals.install()
    try:
        from lmforge.app import run_command

        status = run_command(command, args[1:])
    except signals.Signalled as stop:  # while importing: nothing was started yet
        print(stop, file=sys.stderr)
        status = stop.exit_status
    finally:
        if argv is not None:  # called in-process (e.g. by the tests): their handlers come back; a process
            signals.restore(replaced)  # keeps ours to its end, so that a late signal is ignored too
    if signals.skip_shutdown and argv is None:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    if argv is None:
        # The process ends here and its heap (torch, Lightning, transformers: ~1M objects) goes back to
        # the OS whole: frozen, it is skipped by the shutdown's garbage collections (1.2 s of CPU a run).
        gc.freeze()
    sys.exit(status)
