"""The one exception type that reaches users as a single line and exit status 2."""


class UserError(Exception):
    """Bad input from the user (config key, file, row, checkpoint): shown as one line, exit 2.

    Raise it with a message that names the offending key, file or `path:line`; the CLI
    prints `error: <message>` and exits with status 2 (full traceback with HYDRA_FULL_ERROR=1).
    """
