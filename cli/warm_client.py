"""Hand a command to a warm runner (cli/warm.py), or say there is none. Imports nothing heavy: this runs in
the short-lived process the user (or Prefect's worker) started, before anything else.

A warm runner is a process that has already imported Prefect, pandas and Great Expectations and built the
validation suite (about 3-5 s a process pays before its first bar). For each command it forks a copy of itself
that takes this process's standard input, output and error, environment, working directory and arguments, and runs
the command exactly as this process would have; this process relays signals to it and exits with its exit code.
When no runner answers on the socket, or it runs other code than this process would (a file changed, another
installation), the caller runs the command itself, as before.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import signal
import socket
import struct
import sys
from collections.abc import Mapping
from pathlib import Path

from candleflow import environment

SOCKET_ENV = environment.WARM_SOCKET_ENV
PACKAGES = ("candleflow", "cli", "deployments", "expectations", "flows", "ingest", "providers", "tasks", "warehouse")
ROOT = Path(__file__).resolve().parents[1]
RELAYED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)
_HEADER = struct.Struct("!I")
_inside_runner = False  # set in a warm runner's forks: a command there never hands itself to a runner again


def default_socket_path() -> Path:
    """One runner per user and installation: the path names this interpreter and this checkout."""
    key = hashlib.sha256(f"{sys.prefix}\0{ROOT}".encode()).hexdigest()[:12]
    return environment.runtime_dir() / f"warm-{key}.sock"


def socket_path() -> Path | None:
    configured = environment.warm_socket()
    if configured is None:
        return default_socket_path()
    return Path(configured) if configured else None


def fingerprint() -> str:
    """What a runner must share with this process to run its commands the same way: the interpreter, every source
    file of the candleflow packages this process would import (path, size, modification time) and the installed
    packages (a `pip install` changes site-packages' listing)."""
    digest = hashlib.sha256()
    digest.update(f"{sys.executable}\0{sys.version}".encode())
    for package in PACKAGES:
        spec = importlib.util.find_spec(package)  # where it would be imported from; imports nothing
        origin = Path(spec.origin) if spec is not None and spec.origin else None
        digest.update(f"{package}\0{origin}\n".encode())
        if origin is None:
            continue
        for path in sorted(origin.parent.rglob("*")):
            if path.suffix in (".py", ".json"):
                stat = path.stat()
                digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    for entry in sys.path:
        if entry.endswith("site-packages") and os.path.isdir(entry):
            digest.update(f"{entry}\0{os.stat(entry).st_mtime_ns}\n".encode())
    return digest.hexdigest()


def peer_uid(sock: socket.socket) -> int:
    """The user id of the process at the other end of a Unix socket (Linux SO_PEERCRED: pid, uid, gid)."""
    _pid, uid, _gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
    return int(uid)


def send_message(sock: socket.socket, message: Mapping[str, object], fds: list[int] | None = None) -> None:
    payload = json.dumps(message).encode()
    header = _HEADER.pack(len(payload))
    if fds:
        socket.send_fds(sock, [header], fds)
    else:
        sock.sendall(header)
    sock.sendall(payload)


def receive_message(sock: socket.socket, with_fds: int = 0) -> tuple[dict[str, object] | None, list[int]]:
    """One message (and up to `with_fds` file descriptors sent with its header); (None, []) at end of stream."""
    fds: list[int] = []
    if with_fds:
        header, fds, _flags, _address = socket.recv_fds(sock, _HEADER.size, with_fds)
    else:
        header = sock.recv(_HEADER.size)
    while header and len(header) < _HEADER.size:
        more = sock.recv(_HEADER.size - len(header))
        if not more:
            break
        header += more
    if len(header) < _HEADER.size:
        for fd in fds:
            os.close(fd)
        return None, []
    (length,) = _HEADER.unpack(header)
    payload = b""
    while len(payload) < length:
        more = sock.recv(length - len(payload))
        if not more:
            return None, fds
        payload += more
    return json.loads(payload), fds


def run_warm(kind: str, argv: list[str]) -> int | None:
    """Run `argv` (`kind`: "cli" or "engine") in the warm runner and return its exit code; None, having done
    nothing, when no runner takes it."""
    path = socket_path()
    if _inside_runner or path is None or not path.exists():
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(5)
        sock.connect(str(path))
        if peer_uid(sock) != os.getuid():  # the request carries this environment (keys): only to our own runner
            sock.close()
            return None
        request = {
            "kind": kind,
            "argv": argv,
            "env": environment.current(),
            "cwd": os.getcwd(),
            "fingerprint": fingerprint(),
            "encoding": {"stdout": sys.stdout.encoding, "stderr": sys.stderr.encoding},
        }
        send_message(sock, request, [0, 1, 2])
        answer, _ = receive_message(sock)
    except OSError:
        sock.close()
        return None
    if not answer or "pid" not in answer:  # refused: another fingerprint, or the runner is stopping
        sock.close()
        return None
    pid = int(str(answer["pid"]))

    def relay(signum: int, _frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)

    for signum in RELAYED:
        signal.signal(signum, relay)
    sock.settimeout(None)
    while True:
        try:
            answer, _ = receive_message(sock)
        except InterruptedError:
            continue
        except OSError:
            answer = None
        if answer is None:
            print("candleflow: the warm runner stopped before the command ended", file=sys.stderr)
            return 1
        if "signal" in answer:  # the command was killed: so is this process, and its parent sees the same
            killed_by = int(str(answer["signal"]))
            with contextlib.suppress(OSError, ValueError):  # SIGKILL and SIGSTOP have no handler to reset
                signal.signal(killed_by, signal.SIG_DFL)
            sys.stdout.flush()
            sys.stderr.flush()
            os.kill(os.getpid(), killed_by)
            return 128 + killed_by  # a signal whose default is not to end the process
        if "exit" in answer:
            return int(str(answer["exit"]))
