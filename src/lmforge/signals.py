"""Stop signals from the first second to the last: SIGTERM, SIGUSR1, SIGUSR2 mean "preempted" (exit 143),
SIGINT (Ctrl-C) means "interrupted" (exit 130).

The CLI installs `handle` before its heavy imports. Outside a training loop the first signal raises
`Signalled` at once (a BaseException, so no `except Exception` swallows it, and not a KeyboardInterrupt,
which Lightning would turn into exit 1); inside one (`deferred`) it is only recorded, and the loop stops
at the next step boundary after a checkpoint (lmforge.callbacks.preemption). A repeated signal is ignored:
the stop under way finishes and reports the first one. Kept free of heavy imports.
"""

from __future__ import annotations

import signal
import threading
from typing import Any, Optional

STATUS = {signal.SIGTERM: "preempted", signal.SIGUSR1: "preempted", signal.SIGUSR2: "preempted",
          signal.SIGINT: "interrupted"}
EXIT_STATUS = {"preempted": 143, "interrupted": 130}

received: Optional[int] = None  # the first stop signal this process got
deferred = False  # True while a training loop stops by itself at its next step boundary
#: Set where a signal left native threads running (BPE training in Rust): the interpreter's shutdown
#: would abort on them, so the CLI ends the process with os._exit once its line is out.
skip_shutdown = False


class Signalled(BaseException):
    """A stop signal outside a training loop; `status` is "preempted" or "interrupted"."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.status = STATUS[signal.Signals(signum)]
        self.exit_status = EXIT_STATUS[self.status]
        super().__init__(f"{self.status} by {signal.Signals(signum).name}")


def handle(signum: int, frame: Any) -> None:
    """The handler: record the first signal; raise it unless a training loop takes care of it."""
    global received
    if received is not None:
        return  # a repeated signal (e.g. a second Ctrl-C): the stop under way goes on
    received = signum
    if not deferred:
        raise Signalled(signum)


def is_ours(handler: Any) -> bool:
    return handler is handle


def install() -> dict[int, Any]:
    """Install `handle` for every stop signal still at its default (a handler someone else installed,
    e.g. submitit's, stays); return the handlers it replaced, for `restore`."""
    replaced: dict[int, Any] = {}
    if threading.current_thread() is not threading.main_thread():
        return replaced
    for signum in STATUS:
        if signal.getsignal(signum) in (signal.SIG_DFL, signal.default_int_handler):
            replaced[signum] = signal.signal(signum, handle)
    return replaced


def restore(replaced: dict[int, Any]) -> None:
    for signum, handler in replaced.items():
        signal.signal(signum, handler)


def received_name() -> str:
    return signal.Signals(received).name if received else "a signal"


def stop_of(exc: BaseException) -> tuple[int, str]:
    """(exit status, "interrupted"/"preempted") of a Signalled, or of a KeyboardInterrupt (where no
    handler of ours was installed)."""
    if isinstance(exc, Signalled):
        return exc.exit_status, exc.status
    return 130, "interrupted"
