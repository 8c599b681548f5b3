"""status and gaps: what the warehouse holds, series by series and session by session, and why a session has no
bars (warehouse.coverage, the one coverage query)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from cli.options import series_options


def add_commands(sub: Any) -> None:
    s = sub.add_parser("status", help="coverage per symbol and timeframe")
    series_options(s, series=False)
    s.add_argument("--provider")
    s.add_argument("--symbols")
    s.add_argument("--timeframe")
    s.add_argument("--json", action="store_true", help="one object per series, as JSON")

    g = sub.add_parser("gaps", help="sessions without (enough) bars, and why")
    series_options(g)
    g.add_argument("--start", required=True, help="first session date, YYYY-MM-DD (inclusive)")
    g.add_argument("--end", required=True, help="last session date, YYYY-MM-DD (inclusive)")
    g.add_argument("--json", action="store_true", help="every incomplete session as JSON, one object each")
    g.add_argument("--calendar", default=None, help="exchange calendar (default: CANDLEFLOW_CALENDARS, else XNYS)")
    sub.choices["status"].set_defaults(handler=status)
    sub.choices["gaps"].set_defaults(handler=gaps)


def _filters(args: argparse.Namespace) -> tuple[str | None, list[str] | None, str | None]:
    from candleflow.timeframes import get_timeframe
    from flows.inputs import query_symbols

    symbols = query_symbols(args.symbols, args.provider, args.warehouse) if args.symbols else None
    timeframe = get_timeframe(args.timeframe).name if args.timeframe else None
    return args.provider, symbols, timeframe


def _when(ts: Any, intraday: bool) -> str:
    return str(ts.strftime("%Y-%m-%d %H:%M") if intraday else ts.strftime("%Y-%m-%d"))


def status(args: argparse.Namespace) -> int:
    """Coverage per (provider, symbol, timeframe): bars, first and last, sessions missing, ledger outcomes."""
    from rich.table import Table

    from candleflow.coverage import SessionState
    from candleflow.model import LedgerStatus
    from candleflow.settings import run_settings
    from candleflow.timeframes import get_timeframe
    from cli.output import cells, out
    from flows.form import flag_name
    from flows.inputs import symbol_calendars
    from warehouse.coverage import measure_coverage
    from warehouse.engine import check_reachable
    from warehouse.queries import has_schema, ledger_counts, series_summary

    provider, symbols, timeframe = _filters(args)
    engine = check_reachable(args.warehouse)
    if not has_schema(engine):
        if args.json:
            out.print_json("[]")
            return 0
        out.print("the warehouse is empty: run candleflow backfill first")
        return 0
    series = series_summary(engine, provider, symbols, timeframe)
    counts = ledger_counts(engine, provider, symbols, timeframe)
    table = Table(
        "provider",
        "symbol",
        "tf",
        "bars",
        "first",
        "last",
        "sessions",
        "missing",
        "partial",
        "chunks " + "/".join(LedgerStatus),
        title="candleflow coverage (sessions: the symbol's exchange calendar from first to last bar)",
    )
    listed: list[dict[str, Any]] = []
    for row in series.itertuples():
        tf = get_timeframe(row.timeframe)
        first, last = row.first.date(), row.last.date()
        calendar = symbol_calendars(None, [row.symbol], run_settings().calendars, flag_name)[row.symbol]
        partial = _counts_partial(row.provider)
        (coverage,) = measure_coverage(
            engine,
            row.provider,
            [row.symbol],
            row.timeframe,
            first,
            last,
            calendar=calendar,
            partial=partial,
            closed_only=False,
        ).values()
        gaps = [c for c in coverage if c.state is not SessionState.COMPLETE]
        missing = sum(g.present == 0 for g in gaps)
        mine = counts[
            (counts.provider == row.provider) & (counts.symbol == row.symbol) & (counts.timeframe == row.timeframe)
        ]
        by_status = dict(zip(mine.status, mine.chunks, strict=True))
        chunk_text = "/".join(str(by_status.get(str(s), 0)) for s in LedgerStatus)
        listed.append(
            {
                "provider": row.provider,
                "symbol": row.symbol,
                "timeframe": row.timeframe,
                "calendar": calendar,
                "bars": int(row.bars),
                "first": row.first.isoformat(),
                "last": row.last.isoformat(),
                "sessions": len(coverage),
                "missing": missing,
                "partial": len(gaps) - missing,
                "chunks": {str(s): int(by_status.get(str(s), 0)) for s in LedgerStatus},
            }
        )
        table.add_row(
            *cells(
                row.provider,
                row.symbol,
                row.timeframe,
                f"{row.bars:,}",
                _when(row.first, tf.intraday),
                _when(row.last, tf.intraday),
                len(coverage),
                missing,
                len(gaps) - missing,
                chunk_text,
            )
        )
    if args.json:
        out.print_json(json.dumps(listed))
        return 0
    out.print(table)
    if series.empty:
        out.print("no bars match these filters")
    return 0


def _counts_partial(provider: str) -> bool:
    """Whether fewer bars than a full session is a gap for `provider`'s bars."""
    from providers import PROVIDERS, provider_of

    name = provider_of(provider)
    return name not in PROVIDERS or not PROVIDERS[name].capabilities.bars_only_when_traded


def gaps(args: argparse.Namespace) -> int:
    """Sessions in [start, end] without bars (or with fewer than a full session has), with the reason: as ranges
    of consecutive sessions sharing a state and reason, or (--json) every session, one object each."""
    from rich.table import Table

    from candleflow.coverage import SessionState, incomplete_ranges
    from candleflow.inputs import check_date_range, parse_date
    from candleflow.sessions import check_in_range
    from candleflow.settings import run_settings
    from candleflow.timeframes import get_timeframe
    from cli.output import cells, out
    from flows.form import flag_name
    from flows.inputs import query_symbols, symbol_calendars
    from providers import check_stored_key
    from warehouse.coverage import measure_coverage
    from warehouse.engine import check_reachable

    provider = args.provider
    check_stored_key(provider)  # a provider's name, or `csv:<source>` for a named collection of files
    tf = get_timeframe(args.timeframe)
    symbols = query_symbols(args.symbols, provider, args.warehouse)
    start, end = parse_date(args.start, "start"), parse_date(args.end, "end")
    check_date_range(start, end)
    calendars = symbol_calendars(args.calendar, symbols, run_settings().calendars, flag_name)
    for calendar in set(calendars.values()):
        check_in_range(start, end, calendar)
    engine = check_reachable(args.warehouse)
    expected_total = 0
    counts_partial = _counts_partial(provider)
    found: list[dict[str, Any]] = []
    table = Table("symbol", "sessions", "state", "bars", "why", title=f"gaps {provider} {tf.name} {start}..{end}")
    by_symbol: dict[str, list[Any]] = {}
    for calendar in dict.fromkeys(calendars.values()):
        of_calendar = [symbol for symbol in symbols if calendars[symbol] == calendar]
        by_symbol |= measure_coverage(
            engine,
            provider,
            of_calendar,
            tf.name,
            start,
            end,
            calendar=calendar,
            partial=counts_partial,
            closed_only=False,
        )
    for symbol in symbols:
        coverage = by_symbol[symbol]
        expected_total += len(coverage)
        by_day = {c.session: c for c in coverage}
        found += [
            {
                "symbol": symbol,
                "session": str(c.session),
                "state": str(c.state),
                "expected": c.expected,
                "present": c.present,
                "reason": str(c.reason),
            }
            for c in coverage
            if c.state is not SessionState.COMPLETE
        ]
        for r in incomplete_ranges(coverage):
            when = f"{r.first}" if r.sessions == 1 else f"{r.first}..{r.last} ({r.sessions})"
            days = [by_day[d] for d in by_day if r.first <= d <= r.last]
            present = sum(c.present for c in days)
            expected = sum(c.expected for c in days)
            table.add_row(*cells(symbol, when, r.state, f"{present}/{expected}", r.reason))
    if args.json:
        out.print_json(json.dumps(found))
        return 0 if not found else 1
    if found:
        out.print(table)
    what = "missing or partial bars" if counts_partial else "no bars"
    out.print(f"{len(found)} session(s) with {what} out of {expected_total} expected")
    if not counts_partial:
        out.print(f"({provider} has no bar for an interval without trades, so short sessions are not gaps)")
    return 0 if not found else 1
