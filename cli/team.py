"""`candleflow server`, `candleflow worker` and `candleflow setup`: the commands that run candleflow the Prefect
way (a lasting server, a worker on the pool of prefect.yaml, and what the deployments need on the server)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any


def add_commands(sub: Any) -> None:
    """Add the subcommands to the `candleflow` parser; each sets its `handler` (imports stay lazy)."""
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
    server.set_defaults(handler=_server)

    worker = sub.add_parser("worker", help="run a process worker on the candleflow work pool (needs PREFECT_API_URL)")
    worker.add_argument("--pool", default=None, help="work pool (default candleflow, as in prefect.yaml)")
    worker.add_argument("--limit", type=int, default=None, help="flow runs at once (default: no limit)")
    worker.set_defaults(handler=_worker)

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
    setup.add_argument(
        "--provider",
        action="append",
        default=None,
        help="create the rate limit of this provider only (repeatable; default: every provider)",
    )
    setup.add_argument(
        "--requests-per-second",
        type=float,
        default=None,
        help="the rate of the limits created (default: each provider's own; an existing limit is kept as it is)",
    )
    setup.add_argument(
        "--warehouse-slots",
        type=int,
        default=None,
        help="also a concurrency limit of this many loads at once into the warehouse (of --warehouse)",
    )
    setup.add_argument("--warehouse", default=None, help="SQLAlchemy URL (default: CANDLEFLOW_WAREHOUSE_URL)")
    setup.set_defaults(handler=_setup)

    warm = sub.add_parser(
        "warm",
        help="keep a warm runner in the foreground: this user's backfill/update/repair commands of this installation "
        "start in it (Prefect and Great Expectations already imported) instead of importing them anew",
    )
    warm.set_defaults(handler=_warm)

    engine = sub.add_parser(
        "engine",
        help="run one flow run, as `python -m prefect.engine` does (the work pool's command): in the worker's warm "
        "runner when it has one",
    )
    engine.add_argument("flow_run_id", nargs="?", help="default: env PREFECT__FLOW_RUN_ID, as Prefect's engine")
    engine.set_defaults(handler=_engine)


def _server(args: argparse.Namespace) -> int:
    from candleflow.settings import team_server_settings
    from deployments.server import serve

    settings = team_server_settings()
    serve(settings, host=args.host or settings.host, port=args.port or settings.port, database=args.database_url)


def _worker(args: argparse.Namespace) -> int:
    from candleflow.settings import team_server_settings
    from cli.warm import beside_worker
    from deployments.server import work

    settings = team_server_settings()
    return work(settings, pool=args.pool or settings.pool, limit=args.limit, beside=beside_worker)


def _warm(args: argparse.Namespace) -> int:
    from cli.warm import serve

    return serve(lambda line: print(f"candleflow: {line}", file=sys.stderr, flush=True))


def _engine(args: argparse.Namespace) -> int:
    from cli.warm_client import run_warm

    argv = ["candleflow engine", *([args.flow_run_id] if args.flow_run_id else [])]
    code = run_warm("engine", argv)
    if code is None:  # no warm runner: this process becomes the engine, as Prefect would have started it
        sys.stdout.flush()
        sys.stderr.flush()
        os.execv(sys.executable, [sys.executable, "-m", "prefect.engine", *argv[1:]])
    return code


def _setup(args: argparse.Namespace) -> int:
    from candleflow.errors import BadInputError
    from candleflow.settings import team_server_settings
    from deployments.setup import run_setup
    from providers import check_provider_name

    settings = team_server_settings()
    crash_after = args.crash_after_seconds or settings.crash_after_seconds
    providers = [check_provider_name(name) for name in args.provider] if args.provider else None
    if args.requests_per_second is not None and args.requests_per_second <= 0:
        raise BadInputError(f"--requests-per-second {args.requests_per_second:g} must be above 0")
    if args.warehouse_slots is not None and args.warehouse_slots < 1:
        raise BadInputError(f"--warehouse-slots {args.warehouse_slots} must be at least 1")
    return run_setup(
        pool=args.pool or settings.pool,
        crash_after_seconds=crash_after,
        providers=providers,
        requests_per_second=args.requests_per_second,
        warehouse_url=args.warehouse,
        warehouse_slots=args.warehouse_slots,
    )
