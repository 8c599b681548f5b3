"""`candleflow server`, `candleflow worker` and `candleflow setup`: the commands that run candleflow the Prefect
way (a lasting server, a worker on the pool of prefect.yaml, and what the deployments need on the server)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any


def add_team_commands(sub: Any) -> None:
    """Add the subcommands to the `candleflow` parser; each sets `team_command` (imports stay lazy)."""
    server = sub.add_parser(
        "server", help="run the team's Prefect server (its database in PostgreSQL), in the foreground"
    )
    server.add_argument("--host", default=None, help="address to listen on (default 127.0.0.1)")
    server.add_argument("--port", type=int, default=None, help="port (default 4200)")
    server.add_argument(
        "--database-url",
        default=None,
        help="the server's PostgreSQL database, created if missing (env CANDLEFLOW_PREFECT_DATABASE_URL; default "
        "postgresql+asyncpg://postgres@127.0.0.1:5432/prefect)",
    )
    server.set_defaults(team_command=_server)

    worker = sub.add_parser("worker", help="run a process worker on the candleflow work pool (needs PREFECT_API_URL)")
    worker.add_argument("--pool", default=None, help="work pool (default candleflow, as in prefect.yaml)")
    worker.add_argument("--limit", type=int, default=None, help="flow runs at once (default: no limit)")
    worker.set_defaults(team_command=_worker)

    setup = sub.add_parser(
        "setup",
        help="create or update, idempotently: the work pool, rate limits, notification blocks and Automations",
    )
    setup.add_argument("--pool", default=None, help="work pool (default candleflow, as in prefect.yaml)")
    setup.add_argument(
        "--crash-after-seconds",
        type=int,
        default=None,
        help="mark a run Crashed when it sent no heartbeat for this long (default 90; at least 35)",
    )
    setup.set_defaults(team_command=_setup)

    warm = sub.add_parser(
        "warm",
        help="keep a warm runner in the foreground: this user's backfill/update/repair commands of this installation "
        "start in it (Prefect and Great Expectations already imported) instead of importing them anew",
    )
    warm.set_defaults(team_command=_warm)

    engine = sub.add_parser(
        "engine",
        help="run one flow run, as `python -m prefect.engine` does (the work pool's command): in the worker's warm "
        "runner when it has one",
    )
    engine.add_argument("flow_run_id", nargs="?", help="default: env PREFECT__FLOW_RUN_ID, as Prefect's engine")
    engine.set_defaults(team_command=_engine)


def _server(args: argparse.Namespace) -> int:
    from candleflow.settings import team_server_settings
    from deployments.server import serve

    settings = team_server_settings()
    serve(settings, host=args.host or settings.host, port=args.port or settings.port, database=args.database_url)


def _worker(args: argparse.Namespace) -> int:
    from candleflow.settings import team_server_settings
    from deployments.server import work

    settings = team_server_settings()
    return work(settings, pool=args.pool or settings.pool, limit=args.limit)


def _warm(args: argparse.Namespace) -> int:
    from deployments.warm import serve

    return serve(lambda line: print(f"candleflow: {line}", file=sys.stderr, flush=True))


def _engine(args: argparse.Namespace) -> int:
    from deployments.warm_client import run_warm

    argv = ["candleflow engine", *([args.flow_run_id] if args.flow_run_id else [])]
    code = run_warm("engine", argv)
    if code is None:  # no warm runner: this process becomes the engine, as Prefect would have started it
        sys.stdout.flush()
        sys.stderr.flush()
        os.execv(sys.executable, [sys.executable, "-m", "prefect.engine", *argv[1:]])
    return code


def _setup(args: argparse.Namespace) -> int:
    from candleflow.settings import team_server_settings
    from deployments.setup import run_setup

    settings = team_server_settings()
    crash_after = args.crash_after_seconds or settings.crash_after_seconds
    return run_setup(pool=args.pool or settings.pool, crash_after_seconds=crash_after)
