"""The suite's one process helper: `lmforge` processes forked from a warm interpreter.

A fresh `python -m lmforge` spends seconds importing torch, Lightning, Hydra and transformers before it
does anything; most tests start such processes only because a process boundary is what they test (a
kill, a signal, an exit status, a lock held by another process). Each xdist worker keeps one warm
server that has imported those libraries once and forks a child per process a test starts: a real
process with its own pid, session, signals, descriptors, environment, working directory and
`sys.argv`, running the console script's `main()` exactly as `python -m lmforge` does. Tests get a
`subprocess.Popen`-like handle (`start`) or a finished `CompletedProcess` (`run`).

Not emulated: module state read from the environment at import time (HOME, HF_HOME, wandb's settings);
`start(..., fresh=True)` runs a real new interpreter where that matters.
"""

from __future__ import annotations

import gc
import json
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Optional

PIPE, DEVNULL = subprocess.PIPE, subprocess.DEVNULL
HERE = Path(__file__).resolve().parent


# --- the server (runs as `python tests/warm.py SOCKET`) ---------------------------------------------

def serve(path: str) -> dict:
    """Import the heavy libraries once, then fork a child per request; returns only in a child."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # what lmforge's app sets before importing
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    import lightning  # noqa: F401
    import torch  # noqa: F401
    import transformers.modeling_utils  # noqa: F401

    import lmforge.app  # noqa: F401
    import lmforge.experiment.run  # noqa: F401

    gc.freeze()  # the children's collections skip the imported heap instead of copying every page of it
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ, "accept")
    print("ready", flush=True)
    while True:
        for key, _ in selector.select():
            if key.data == "accept":
                conn, _ = listener.accept()
                message, fds, _, _ = socket.recv_fds(conn, 1 << 20, 3)
                if not message:  # the worker is done: leave the children to finish on their own
                    sys.exit(0)
                pid = os.fork()
                if pid == 0:  # the child keeps none of the server's descriptors
                    for other in list(selector.get_map().values()):
                        if other.data != "accept":
                            other.data[1].close()
                            os.close(other.fd)
                    selector.close()
                    listener.close()
                    conn.close()
                    return _become({**json.loads(message), "fds": fds})
                for fd in fds:
                    os.close(fd)
                conn.sendall(f"{pid}\n".encode())
                selector.register(os.pidfd_open(pid), selectors.EVENT_READ, (pid, conn))
            else:
                pid, conn = key.data
                selector.unregister(key.fileobj)
                os.close(key.fd)
                _, status = os.waitpid(pid, 0)
                try:
                    conn.sendall(f"{os.waitstatus_to_exitcode(status)}\n".encode())
                except OSError:  # the test stopped listening
                    pass
                conn.close()


def _become(request: dict) -> dict:
    """In the forked child: the state a new `python -m lmforge ARGS` process starts with."""
    for target, fd in zip((0, 1, 2), request["fds"]):
        os.dup2(fd, target)
        os.close(fd)
    if request["new_session"]:
        os.setsid()
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2, signal.SIGCHLD, signal.SIGQUIT):
        signal.signal(signum, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C as for a command typed in a terminal
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    extra = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    sys.path[:] = [request["cwd"], *extra, *[p for p in sys.path if p != str(HERE)]]
    if warnings_option := os.environ.get("PYTHONWARNINGS"):
        import warnings

        warnings.simplefilter(warnings_option)
    if threads := os.environ.get("OMP_NUM_THREADS"):
        import torch

        torch.set_num_threads(int(threads))
    import lmforge.__main__ as entry

    sys.modules["__main__"] = entry  # as `python -m lmforge` (multiprocessing's spawn reads it)
    sys.argv = [entry.__file__, *request["args"]]
    return request


# --- the tests' side ----------------------------------------------------------------------------------

class Started:
    """A process started by `start`: the parts of `subprocess.Popen` the tests use."""

    def __init__(self, args: list[str], pid: int, conn: socket.socket, stdout: Optional[IO], stderr: Optional[IO]):
        self.args, self.pid, self._conn = args, pid, conn
        self.stdout, self.stderr = stdout, stderr
        self.returncode: Optional[int] = None
        self._buffer = b""

    def _read_status(self, timeout: Optional[float]) -> None:
        self._conn.settimeout(timeout)
        try:
            while b"\n" not in self._buffer:
                chunk = self._conn.recv(64)
                if not chunk:
                    raise RuntimeError(f"the warm server lost process {self.pid}")
                self._buffer += chunk
        except (TimeoutError, BlockingIOError):
            return
        self.returncode = int(self._buffer.split(b"\n")[0])
        self._conn.close()

    def poll(self) -> Optional[int]:
        if self.returncode is None:
            self._read_status(0)
        return self.returncode

    def wait(self, timeout: Optional[float] = None) -> int:
        if self.returncode is None:
            self._read_status(timeout)
            if self.returncode is None:
                raise subprocess.TimeoutExpired(self.args, timeout)
        return self.returncode

    def send_signal(self, signum: int) -> None:
        if self.returncode is None:
            os.kill(self.pid, signum)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def communicate(self, timeout: Optional[float] = None) -> tuple:
        """Read stdout and stderr to their ends (both at once, so that neither pipe fills), then wait."""
        results: dict = {}
        readers = [threading.Thread(target=lambda n=n, f=f: results.__setitem__(n, f.read()), daemon=True)
                   for n, f in (("out", self.stdout), ("err", self.stderr)) if f is not None]
        for reader in readers:
            reader.start()
        deadline = None if timeout is None else time.monotonic() + timeout
        for reader in readers:
            reader.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
            if reader.is_alive():
                raise subprocess.TimeoutExpired(self.args, timeout)
        self.wait(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return results.get("out"), results.get("err")

    def __enter__(self) -> "Started":
        return self

    def __exit__(self, *exc) -> None:
        for stream in (self.stdout, self.stderr):
            if stream is not None:
                stream.close()
        if self.returncode is None:
            self.wait()


_server: dict = {}


def _socket_path() -> str:
    if "path" not in _server:
        import tempfile

        folder = tempfile.mkdtemp(prefix="lmforge-warm-")
        path = os.path.join(folder, "socket")
        env = {**os.environ, "PYTHONWARNINGS": "ignore"}
        env.pop("HYDRA_FULL_ERROR", None)
        server = subprocess.Popen([sys.executable, __file__, path], env=env, stdin=DEVNULL, stdout=PIPE,
                                  cwd=folder, start_new_session=True)
        if server.stdout.readline().strip() != b"ready":
            raise RuntimeError(f"the warm server did not start (exit {server.wait()})")
        _server.update(path=path, process=server)
    return _server["path"]


def stop_server() -> None:
    """End this worker's server (its children, if any, finish on their own)."""
    if "process" in _server:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.connect(_server["path"])
            socket.send_fds(conn, [b""], [os.open(os.devnull, os.O_RDONLY)])
        _server.pop("process").wait()
        shutil.rmtree(os.path.dirname(_server.pop("path")), ignore_errors=True)


def _descriptor(target, mode: int) -> tuple[int, Optional[int]]:
    """(fd to hand the child, fd we read from) for a Popen-style stdout/stderr argument."""
    if target is PIPE:
        read, write = os.pipe()
        return write, read
    if target is None or target is DEVNULL:
        return os.open(os.devnull, mode), None
    return os.dup(target if isinstance(target, int) else target.fileno()), None


def start(args: list[str], cwd: Path, env: dict, stdout=PIPE, stderr=PIPE, text: bool = True,
          new_session: bool = False, fresh: bool = False):
    """`python -m lmforge ARGS` in `cwd` with exactly `env`, as a process; `fresh=True`: a new interpreter."""
    if fresh:
        return subprocess.Popen([sys.executable, "-m", "lmforge", *args], cwd=cwd, env=env, stdin=DEVNULL,
                                stdout=stdout, stderr=stderr, text=text, start_new_session=new_session)
    out = _descriptor(stdout, os.O_WRONLY)
    err = (os.dup(out[0]), None) if stderr == subprocess.STDOUT else _descriptor(stderr, os.O_WRONLY)
    pairs = [(os.open(os.devnull, os.O_RDONLY), None), out, err]
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.connect(_socket_path())
    request = {"args": list(args), "cwd": str(cwd), "env": dict(env), "new_session": new_session}
    socket.send_fds(conn, [json.dumps(request).encode()], [given for given, _ in pairs])
    for given, _ in pairs:
        os.close(given)
    line = b""
    while not line.endswith(b"\n"):
        chunk = conn.recv(64)
        if not chunk:
            raise RuntimeError("the warm server did not start the process")
        line += chunk
    streams = [None if read is None else open(read, "r" if text else "rb") for _, read in pairs[1:]]
    return Started(["lmforge", *args], int(line), conn, *streams)


if __name__ == "__main__":
    serve(sys.argv[1])
    from lmforge.cli import main  # in a forked child, with its request applied

    main()
