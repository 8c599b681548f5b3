"""The warm runner: one process that imports Prefect, pandas, Great Expectations and the flows once, builds the
validation suite, then forks a copy of itself for each command handed to it (cli/warm_client.py), so
that a command starts where a new process would be 3-5 s later.

Started by `candleflow worker` (the worker's flow runs come here through `candleflow engine`) and by
`candleflow warm` (the `candleflow backfill/update/repair` commands of this user and installation come here).
The runner stays single-threaded (a fork copies only the calling thread) and creates no engine, client or event
loop before forking: each forked command builds its own, as a new process would.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import os
import random
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from candleflow import environment
from candleflow.errors import BadInputError
from cli import warm_client
from cli.warm_client import fingerprint, peer_uid, receive_message, send_message
from deployments import server
from deployments.prefect_api import apply_environment, die_with_parent

_preloaded = False


def preload() -> None:
    """Import what every run imports and build the suite; nothing that starts a thread or opens a connection.
    Not cli.output: its rich consoles read the caller's terminal when they are made. Once per process (a
    command forked from the warm runner finds it done)."""
    global _preloaded
    if _preloaded:
        return
    _preloaded = True
    environment.set_default("GX_ANALYTICS_ENABLED", "false")
    import importlib
    import warnings

    import pandas as pd
    import tqdm

    # each forked run executes prefect.engine as __main__ (_run_command) after this imported it on purpose:
    # runpy's warning about that, in every run's log, says nothing to the user
    warnings.filterwarnings("ignore", "'prefect.engine' found in sys.modules", RuntimeWarning, "runpy")

    tqdm.tqdm.monitor_interval = 0  # GX's first validation starts tqdm's monitor thread otherwise
    for module in (
        "fastapi.encoders",  # Prefect imports it at each run's start to serialize the parameters (0.5-1 s)
        "prefect.engine",
        "prefect.flow_engine",
        "prefect.task_engine",
        "prefect.utilities.visualization",
        "rich.console",
        "rich.progress",
        "rich.table",
        "flows.backfill",
        "flows.incremental",
        "flows.repair",
    ):
        importlib.import_module(module)
    from candleflow.model import Chunk
    from candleflow.sessions import DEFAULT_CALENDAR, get_calendar
    from expectations import validate_bars
    from providers.base import request_for
    from providers.synthetic import SyntheticProvider

    get_calendar(DEFAULT_CALENDAR)  # exchange_calendars builds a calendar in about 0.4 s
    # Great Expectations builds its context and suite, and sets up its metrics at the first validation (0.3-0.5 s)
    chunk = Chunk("synthetic", "WARM", "1d", pd.Timestamp("2024-01-01", tz="UTC"), pd.Timestamp("2024-02-01", tz="UTC"))
    validate_bars([(chunk, SyntheticProvider().fetch(request_for([chunk])).bars)])


class Runner:
    def __init__(self, path: Path, say: Callable[[str], None]) -> None:
        self.path = path
        self.say = say
        self.fingerprint = fingerprint()
        self.selector = selectors.DefaultSelector()
        self.children: dict[int, tuple[socket.socket, int]] = {}  # pid -> (caller's connection, pidfd)
        self.stopping = False
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)

    def serve(self) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        folder = self.path.parent.stat()
        if folder.st_uid != os.getuid() or folder.st_mode & 0o022:
            raise BadInputError(
                f"the warm runner's folder {self.path.parent} belongs to another user or others may write to it: "
                f"remove it, or set CANDLEFLOW_WARM_SOCKET to a path in a folder of your own"
            )
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self.listener.bind(str(self.path))
        os.chmod(self.path, 0o600)
        self.listener.listen(64)
        self.selector.register(self.listener, selectors.EVENT_READ, "accept")
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, self._stop)
        if threading.active_count() != 1:  # a thread started by an import would not exist in the forked copies
            self.say(f"warm runner: {threading.active_count()} threads after preloading; forks may misbehave")
        self.say(f"warm runner ready on {self.path} (pid {os.getpid()})")
        try:
            while not (self.stopping and not self.children):
                for key, _events in self.selector.select(timeout=1.0):
                    if key.data == "accept":
                        self._accept()
                    elif key.data[0] == "child":
                        self._reap(key.data[1])
                    elif key.data[0] == "caller":
                        self._caller_gone(key.data[1])
        finally:
            with contextlib.suppress(OSError):
                if self.path.exists() and self.path.stat().st_ino == os.fstat(self.listener.fileno()).st_ino:
                    self.path.unlink()
            self.listener.close()

    def _stop(self, signum: int, _frame: Any) -> None:
        if not self.stopping:
            self.say(f"warm runner: {signal.Signals(signum).name}, stopping; {len(self.children)} command(s) running")
        self.stopping = True
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(self.listener)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        for pid in self.children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    def _accept(self) -> None:
        conn, _ = self.listener.accept()
        conn.settimeout(5)
        if peer_uid(conn) != os.getuid():  # a command runs as this runner's user: only that user may ask
            conn.close()
            return
        fds: list[int] = []
        try:
            request, fds = receive_message(conn, with_fds=3)
            if request is None or len(fds) != 3 or request.get("fingerprint") != self.fingerprint:
                send_message(conn, {"refused": "another fingerprint" if request else "no request"})
                if request and request.get("fingerprint") != self.fingerprint and not self.children:
                    self.say("warm runner: the code or the installation changed; stopping (the next one starts anew)")
                    self._stop(signal.SIGTERM, None)
                conn.close()
                return
            sys.stdout.flush()
            sys.stderr.flush()
            runner = os.getpid()
            pid = os.fork()
            if pid == 0:
                self._child(runner, conn, fds, request)  # never returns
            pidfd = os.pidfd_open(pid)
            self.children[pid] = (conn, pidfd)
            self.say(f"warm runner: pid {pid}: {_describe(request)}")
            send_message(conn, {"pid": pid})
            conn.settimeout(None)
            self.selector.register(pidfd, selectors.EVENT_READ, ("child", pid))
            self.selector.register(conn, selectors.EVENT_READ, ("caller", pid))
        except OSError as exc:
            self.say(f"warm runner: a request failed: {exc}")
            conn.close()
        finally:
            for fd in fds:
                os.close(fd)

    def _reap(self, pid: int) -> None:
        conn, pidfd = self.children.pop(pid)
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        for fd in (pidfd, conn):
            with contextlib.suppress(KeyError, ValueError):
                self.selector.unregister(fd)
        # killed by a signal: the caller dies of the same signal, so whoever waits for it sees what they would have
        ending = f"by {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
        self.say(f"warm runner: pid {pid} ended, {ending}")
        with contextlib.suppress(OSError):
            send_message(conn, {"signal": -code} if code < 0 else {"exit": code})
        conn.close()
        os.close(pidfd)

    def _caller_gone(self, pid: int) -> None:
        """The caller's connection became readable: it has nothing to send, so it was killed outright (signals it
        relays). Its command dies with it, as it would have inside it: a SIGKILLed worker's flow-run process ends
        its run there and then (the worker reports it; a CLI run's heartbeats stop)."""
        conn, _ = self.children[pid]
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(conn)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)

    def _child(self, runner: int, conn: socket.socket, fds: list[int], request: dict[str, Any]) -> None:
        code = 1
        try:
            self._become(runner, conn, fds, request)
            code = _run_command(str(request["kind"]), [str(arg) for arg in request["argv"]])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException:
            import traceback

            traceback.print_exc()
        finally:
            with contextlib.suppress(BaseException):
                atexit._run_exitfuncs()  # as at a new process's exit: Prefect sends its last logs and events there
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(Exception):
                    stream.flush()
            os._exit(code)

    def _become(self, runner: int, conn: socket.socket, fds: list[int], request: dict[str, Any]) -> None:
        """Turn this fork into the process the caller would have started."""
        for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2):
            signal.signal(signum, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        die_with_parent(runner)()  # the runner's end ends its commands
        self.selector.close()
        self.listener.close()
        for other, pidfd in self.children.values():
            other.close()
            os.close(pidfd)
        conn.close()
        os.setsid()  # the runner's process group and terminal are not the caller's
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in fds]  # a received fd may itself be 0-2
        for fd in fds:
            os.close(fd)
        for target, fd in enumerate(high):
            os.dup2(fd, target)
            os.close(fd)
        encodings = request.get("encoding") or {}
        sys.stdin = open(0, closefd=False)  # noqa: SIM115
        sys.stdout = open(1, "w", closefd=False, encoding=encodings.get("stdout"), buffering=-1)  # noqa: SIM115
        sys.stderr = open(2, "w", closefd=False, encoding=encodings.get("stderr"), errors="backslashreplace")  # noqa: SIM115
        if sys.stdout.isatty():
            sys.stdout.reconfigure(line_buffering=True)
        sys.stderr.reconfigure(line_buffering=True)
        for name in ("stdin", "stdout", "stderr"):
            setattr(sys, f"__{name}__", getattr(sys, name))
        os.chdir(str(request["cwd"]))
        environment.replace_with(dict(request["env"]))
        random.seed()
        warm_client._inside_runner = True
        if request["kind"] != "cli":  # the CLI applies it itself, after it sets its own quiet logging
            apply_environment()


def _describe(request: dict[str, Any]) -> str:
    argv = [str(arg) for arg in request["argv"]]
    if request["kind"] == "engine":
        run = argv[1] if len(argv) > 1 else dict(request["env"]).get("PREFECT__FLOW_RUN_ID", "?")
        return f"flow run {run}"
    return " ".join(["candleflow", *argv[1:3]]) + (" ..." if len(argv) > 3 else "")


def _run_command(kind: str, argv: list[str]) -> int:
    sys.argv = argv
    if kind == "cli":
        from cli import console

        console()  # exits itself; it runs here, not in a runner again (warm_client._inside_runner)
        return 0
    if kind == "engine":
        import runpy

        sys.argv = ["prefect.engine", *argv[1:]]
        runpy.run_module("prefect.engine", run_name="__main__", alter_sys=True)
        return 0
    raise ValueError(f"unknown command kind {kind!r}")


@contextlib.contextmanager
def beside_worker(env: dict[str, str], preexec: Any) -> Iterator[None]:
    """A warm runner beside the worker (`candleflow worker`), on a socket only its runs know (set in `env`): each
    flow run's `candleflow engine` starts there, forked from a process that has everything imported. Until it
    is ready, and if it stops, runs start cold as before. CANDLEFLOW_WARM_SOCKET set empty: no warm runner."""
    if env.get(warm_client.SOCKET_ENV) == "":
        yield
        return
    home = Path(tempfile.mkdtemp(prefix="candleflow-worker-"))
    env[warm_client.SOCKET_ENV] = str(home / "warm.sock")
    runner = subprocess.Popen([sys.executable, "-m", "cli.warm"], env=env, stdin=subprocess.DEVNULL, preexec_fn=preexec)
    try:
        yield
    finally:
        runner.terminate()
        try:
            runner.wait(server.STOP_SECONDS)
        except subprocess.TimeoutExpired:
            runner.kill()
            runner.wait()
        shutil.rmtree(home, ignore_errors=True)


def serve(say: Callable[[str], None]) -> int:
    """Load everything, then serve on `socket_path()` until SIGTERM, SIGINT or SIGHUP."""
    path = warm_client.socket_path()
    if path is None:
        raise BadInputError(
            f"{warm_client.SOCKET_ENV} is set and empty, which turns the warm runner off: unset it to start one"
        )
    started = time.perf_counter()
    preload()
    say(f"warm runner: Prefect, Great Expectations and the flows loaded in {time.perf_counter() - started:.1f} s")
    Runner(path, say).serve()
    return 0


if __name__ == "__main__":  # `candleflow worker`'s runner, on the socket it names
    raise SystemExit(serve(lambda line: print(line, file=sys.stderr, flush=True)))
