"""`candleflow doctor`: one line per part a scheduled run needs, `ok` or what is wrong and the fix; exit 1 when
any is wrong (deployments/doctor.py checks them, read-only, each within --timeout seconds)."""

from __future__ import annotations

import argparse
from typing import Any


def add_command(sub: Any) -> None:
    d = sub.add_parser("doctor", help="check warehouse, server, pool, worker, limits, deployments, keys, notices")
    d.add_argument("--warehouse", help="SQLAlchemy URL (env CANDLEFLOW_WAREHOUSE_URL; default sqlite:///candleflow.db)")
    d.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS", help="each check's deadline (default 10)")
    d.add_argument("--send-test", action="store_true", help="send a test notice through each notification channel")
    d.set_defaults(handler=doctor)


def doctor(args: argparse.Namespace) -> int:
    import time

    from candleflow.errors import BadInputError
    from cli.output import out
    from deployments.doctor import diagnose

    if not 0 < args.timeout <= 300:
        raise BadInputError(f"--timeout {args.timeout:g}: give seconds above 0, at most 300")
    started = time.perf_counter()
    findings = diagnose(args.warehouse, timeout=args.timeout, send_test=args.send_test)
    for finding in findings:
        out.print(finding.line(), markup=False)
    wrong = [f for f in findings if not f.ok]
    took = time.perf_counter() - started
    out.print(
        f"{len(findings) - len(wrong)} ok, {len(wrong)} wrong, in {took:.1f} s"
        if wrong
        else f"all {len(findings)} ok, in {took:.1f} s",
        markup=False,
    )
    return 1 if wrong else 0
