"""`candleflow metrics`: the warehouse's metrics in Prometheus' text format, printed, or served over HTTP for a
Prometheus to scrape (`--serve PORT`), each scrape reading the warehouse afresh (ingest/metrics.py)."""

from __future__ import annotations

import argparse
import sys
import threading
from typing import Any


def add_command(sub: Any) -> None:
    m = sub.add_parser("metrics", help="the warehouse's metrics in Prometheus' format: printed, or served (--serve)")
    m.add_argument("--warehouse", help="SQLAlchemy URL (env CANDLEFLOW_WAREHOUSE_URL; default sqlite:///candleflow.db)")
    m.add_argument(
        "--serve",
        type=int,
        default=None,
        metavar="PORT",
        help="serve /metrics on PORT until stopped (0: any free port, printed)",
    )
    m.add_argument("--address", default="127.0.0.1", help="with --serve: the address to listen on (default 127.0.0.1)")
    m.set_defaults(handler=metrics)


def metrics(args: argparse.Namespace) -> int:
    from prometheus_client import CollectorRegistry, generate_latest

    from candleflow.errors import BadInputError
    from candleflow.settings import run_settings
    from ingest.metrics import WarehouseCollector
    from warehouse.engine import check_reachable

    engine = check_reachable(args.warehouse)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(WarehouseCollector(engine, run_settings().calendars))
    if args.serve is None:
        sys.stdout.write(generate_latest(registry).decode())
        sys.stdout.flush()
        return 0
    if not 0 <= args.serve < 65536:
        raise BadInputError(f"--serve {args.serve}: give a TCP port from 1 to 65535, e.g. 9464 (0: any free one)")
    from prometheus_client import start_http_server

    try:
        server, thread = start_http_server(args.serve, addr=args.address, registry=registry)
    except OSError as exc:
        raise BadInputError(
            f"--serve {args.serve}: cannot listen on {args.address}:{args.serve} ({exc.strerror or exc}); "
            "choose a free port"
        ) from None
    port = server.server_address[1]
    print(f"serving the warehouse's metrics at http://{args.address}:{port}/metrics (Ctrl-C stops)", flush=True)
    stop = threading.Event()
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
        thread.join(timeout=5)
    return 0
