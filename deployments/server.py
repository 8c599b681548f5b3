"""The team's lasting Prefect server, its database in PostgreSQL, and a process worker on the candleflow pool.

`candleflow server` creates the database if it is missing, then becomes `prefect server start` (the same process:
Ctrl-C or SIGTERM stops it) with the UI pointed at its own API, so the UI works on any port. `candleflow worker`
becomes `prefect worker start` on the pool of prefect.yaml, with runs sending heartbeats.
"""

from __future__ import annotations

import os
import socket
import sys
from typing import NoReturn

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

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
        **os.environ,
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


def work(settings: TeamServerSettings, *, pool: str, limit: int | None) -> NoReturn:
    """Become a process worker on `pool`: it runs the deployments' flow runs as subprocesses."""
    from deployments.prefect_api import check_server, configured_api_url

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
    env = {**os.environ, **QUIET, "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(settings.heartbeat_seconds)}
    print(
        f"candleflow: worker on pool {pool!r} of {api}; runs send heartbeats every {settings.heartbeat_seconds} s",
        flush=True,
    )
    os.execve(sys.executable, argv, env)
