"""Watching the warehouse: freshness (how far each series lags, and why), metrics (Prometheus' format, printed or
served) and doctor (every part a run needs, one line each)."""

from __future__ import annotations

import argparse
from typing import Any

from cli.options import series_options

EXIT_OK, EXIT_WRONG = 0, 1


def add_commands(sub: Any) -> None:
    f = sub.add_parser("freshness", help="how many closed sessions each series lags, and why; exit 1 when too many")
    series_options(f, timeframes=True)
    f.add_argument(
        "--max-lag-sessions",
        default="1",  # candleflow.freshness.DEFAULT_MAX_LAG, written out: the parser imports nothing heavy
        metavar="N",
        help="a series lagging more than N closed sessions of its calendar is stale (default 1)",
    )
    f.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="provider option")
    f.add_argument("--calendar", default=None, help="exchange calendar (default: CANDLEFLOW_CALENDARS, else XNYS)")
    f.add_argument("--no-vendor", action="store_true", help="do not ask the vendor which symbols it stopped listing")
    f.add_argument("--json", action="store_true", help="one object per series, laggards first")
    f.set_defaults(handler=freshness)

    from cli import doctor, metrics

    metrics.add_command(sub)
    doctor.add_command(sub)


def freshness(args: argparse.Namespace) -> int:
    """Each series' lag, laggards first; exit 1 when any lags more than --max-lag-sessions (a delisted symbol is
    reported, and recorded, once: it never fails the check)."""
    from rich.table import Table

    from candleflow.inputs import parse_options
    from cli.output import PLAIN_ABOVE_ROWS, cells, out, print_json, print_rows
    from cli.run_report import form_warehouse_url
    from flows.form import flag_name
    from flows.inputs import check_freshness_inputs

    inputs = check_freshness_inputs(
        provider=args.provider,
        symbols=args.symbols,
        timeframes=args.timeframe,
        provider_options=parse_options(args.option) or None,
        warehouse_url=form_warehouse_url(args.warehouse),
        calendar=args.calendar,
        max_lag_sessions=args.max_lag_sessions,
        name=flag_name,
    )
    report = inputs.freshness(inputs.max_lag_sessions, ask_vendor=not args.no_vendor)
    if args.json:
        print_json([{**r.as_json(), "stale": r.stale(report.max_lag)} for r in report.rows])
        return EXIT_OK if report.ok else EXIT_WRONG
    table = Table("series", "lag", "newest", "state", "why", title=report.headline())
    plain: list[list[str]] = []
    for r in report.rows:
        state = "stale" if r.stale(report.max_lag) else "delisted" if r.delisted_on else "ok"
        values = [r.series, "never" if r.lag is None else str(r.lag), str(r.newest_session or ""), state, r.why]
        plain.append(values)
        if len(report.rows) <= PLAIN_ABOVE_ROWS:
            table.add_row(*cells(*values))
    print_rows(table, [str(c.header) for c in table.columns], plain, str(table.title))
    for r in report.newly_delisted:
        out.print(f"newly delisted (reported once, not a failure): {r.describe()}", markup=False)
    if report.vendor_note:
        out.print(report.vendor_note, markup=False)
    return EXIT_OK if report.ok else EXIT_WRONG
