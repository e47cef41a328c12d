"""The exceptions that reach users as a single line instead of a traceback."""


class UserError(Exception):
    """Bad input from the user (config key, file, row, checkpoint): shown as one line, exit 2.

    Raise it with a message that names the offending key, file or `path:line`; the CLI
    prints `error: <message>` and exits with status 2 (full traceback with HYDRA_FULL_ERROR=1).
    """


class RunFailed(Exception):
    """A run that went wrong without a bug in lmforge or bad input (e.g. a diverging loss): one line,
    exit status 1."""


class Stopped(Exception):
    """A run stopped by a signal after saving a checkpoint: one line, exit status 130 (interrupted)
    or 143 (preempted)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
