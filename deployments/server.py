"""The team's lasting Prefect server, its database in PostgreSQL, and a process worker on the candleflow pool.

`candleflow server` creates the database if it is missing, then becomes `prefect server start` (the same process:
Ctrl-C or SIGTERM stops it) with the UI pointed at its own API, so the UI works on any port. `candleflow worker`
runs `prefect worker start` on the pool of prefect.yaml, with runs sending heartbeats, and stops it within seconds
of SIGTERM or Ctrl-C, its runs marked Crashed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, NoReturn

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from candleflow import environment
from candleflow.errors import BadInputError
from candleflow.settings import TeamServerSettings

QUIET = {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1", "GX_ANALYTICS_ENABLED": "false"}


def database_url(settings: TeamServerSettings, override: str | None = None) -> URL:
    raw = override or settings.database_url.get_secret_value()
    try:
        url = make_url(raw)
    except ArgumentError:
        raise BadInputError(
            "the Prefect database URL is not a SQLAlchemy URL: use e.g. "
            "postgresql+asyncpg://user@127.0.0.1:5432/prefect (fix --database-url or CANDLEFLOW_PREFECT_DATABASE_URL)"
        ) from None
    if url.drivername in ("postgresql", "postgres", "postgresql+psycopg"):
        url = url.set(drivername="postgresql+asyncpg")  # the Prefect server's driver
    if url.drivername != "postgresql+asyncpg" or not url.database:
        raise BadInputError(
            f"the Prefect database {url.render_as_string(hide_password=True)} is not a PostgreSQL database URL: use "
            "postgresql+asyncpg://user@host:5432/prefect (fix --database-url or CANDLEFLOW_PREFECT_DATABASE_URL)"
        )
    return url


def ensure_database(url: URL) -> bool:
    """Create the server's database when it is missing; True when it was created."""
    shown = url.render_as_string(hide_password=True)
    conninfo = make_conninfo(
        host=url.host or "127.0.0.1", port=url.port or 5432, user=url.username, password=url.password, dbname="postgres"
    )
    try:
        with psycopg.connect(conninfo, autocommit=True, connect_timeout=10) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (url.database,)).fetchone()
            if exists:
                return False
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(str(url.database))))
            return True
    except psycopg.Error as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BadInputError(
            f"cannot prepare the Prefect database {shown}: {reason}; start PostgreSQL or fix --database-url "
            "(CANDLEFLOW_PREFECT_DATABASE_URL)"
        ) from None


def _port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def server_environment(url: URL, host: str, port: int) -> dict[str, str]:
    api = f"http://{host}:{port}/api"
    return {
        **environment.current(),
        **QUIET,
        "PREFECT_API_DATABASE_CONNECTION_URL": url.render_as_string(hide_password=False),
        "PREFECT_UI_API_URL": api,  # the UI calls this API whatever port it is served on
        "PREFECT_UI_URL": f"http://{host}:{port}",  # the links notices carry
        "PREFECT_API_URL": api,
    }


def serve(settings: TeamServerSettings, *, host: str, port: int, database: str | None) -> NoReturn:
    """Create the database if needed, say where everything is, then become the Prefect server."""
    url = database_url(settings, database)
    if not _port_is_free(host, port):
        raise BadInputError(
            f"port {port} on {host} is taken (a Prefect server already running?): use it with "
            f"PREFECT_API_URL=http://{host}:{port}/api, or pass --port"
        )
    created = ensure_database(url)
    api = f"http://{host}:{port}/api"
    print(
        f"candleflow: Prefect server database {url.render_as_string(hide_password=True)}"
        f" ({'created' if created else 'exists'})"
    )
    print(f"candleflow: Prefect UI http://{host}:{port}, API {api}")
    print(f"candleflow: point commands and workers at it: export PREFECT_API_URL={api}", flush=True)
    argv = [sys.executable, "-m", "prefect", "server", "start", "--host", host, "--port", str(port)]
    os.execve(sys.executable, argv, server_environment(url, host, port))


Beside = Callable[[dict[str, str], Any], AbstractContextManager[None]]  # what runs beside the worker


def work(settings: TeamServerSettings, *, pool: str, limit: int | None, beside: Beside | None = None) -> int:
    """Run a process worker on `pool` (it runs the deployments' flow runs as subprocesses) until it stops or
    this command gets SIGTERM, SIGINT or SIGHUP (see `supervise`); returns the exit code. `beside(env, preexec)`:
    a process to keep running beside the worker (the command line's warm runner), which may add to the
    environment the worker and its runs get."""
    from deployments.prefect_api import (
        CA_FILE_SETTING,
        check_server,
        configured_api_url,
        die_with_parent,
        plain_http_ca_file,
    )

    api = configured_api_url()
    if not api:
        raise BadInputError(
            "PREFECT_API_URL is not set: a worker needs a lasting server (start one with candleflow server, then "
            "export PREFECT_API_URL=http://127.0.0.1:4200/api)"
        )
    check_server(api)
    argv = [sys.executable, "-m", "prefect", "worker", "start", "--pool", pool, "--type", "process"]
    if limit is not None:
        argv += ["--limit", str(limit)]
    env = {**environment.current(), **QUIET, "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(settings.heartbeat_seconds)}
    # the pool's command is `candleflow engine`: this installation's, whatever PATH the worker was started with
    env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", os.defpath)])
    if ca_file := plain_http_ca_file(api):
        env[CA_FILE_SETTING] = ca_file
    print(
        f"candleflow: worker on pool {pool!r} of {api}; runs send heartbeats every {settings.heartbeat_seconds} s",
        flush=True,
    )
    # on Linux the kernel stops the worker if this command is killed outright (SIGKILL), so none is left behind
    preexec = die_with_parent(os.getpid()) if sys.platform == "linux" else None
    with beside(env, preexec) if beside is not None else contextlib.nullcontext():
        return supervise(subprocess.Popen(argv, env=env, preexec_fn=preexec))


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
STOP_SECONDS = 20.0  # how long the worker and its runs get to end after the signal, before they are killed


def supervise(worker: subprocess.Popen[bytes]) -> int:
    """Wait for the worker. On a stop signal, end its flow runs first (SIGTERM: each marks its run Crashed and
    exits once its chunks in flight are done), then the worker, and kill what is left after STOP_SECONDS.
    Prefect's worker alone, told to stop, waited for its runs to finish: over a minute, or hours."""
    received: list[int] = []
    previous = {
        signum: signal.signal(signum, lambda signum, _frame: received.append(signum)) for signum in STOP_SIGNALS
    }
    try:
        deadline: float | None = None
        while True:
            try:
                code = worker.wait(timeout=0.5)
                break
            except subprocess.TimeoutExpired:
                pass
            if received and deadline is None:
                name = signal.Signals(received[0]).name
                print(f"candleflow: {name}: stopping the worker; its runs are marked Crashed", flush=True)
                _signal_all(_children(worker.pid), signal.SIGTERM)
                worker.send_signal(signal.SIGTERM)
                deadline = time.monotonic() + STOP_SECONDS
            elif deadline is not None and time.monotonic() > deadline:
                _signal_all([*_children(worker.pid), worker.pid], signal.SIGKILL)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return 128 + received[0] if received else code


def _children(pid: int) -> list[int]:
    """The processes `pid` started (its flow runs), read from /proc; none where there is no /proc."""
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _signal_all(pids: list[int], signum: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)
