"""status and gaps: what the warehouse holds, series by series and session by session, and why a session has no
bars (warehouse.coverage, the one coverage query)."""

from __future__ import annotations

import argparse
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
    """Coverage per (provider, symbol, timeframe): bars, first and last, sessions missing, ledger outcomes; and a
    row `ALL` per provider and timeframe loaded as every ticker (`--symbols ALL`: one ledger row per file)."""
    from rich.table import Table

    from candleflow.model import EVERY_SYMBOL, LedgerStatus, every_ticker, shown_symbol
    from candleflow.timeframes import get_timeframe
    from cli.output import PLAIN_ABOVE_ROWS, cells, out, print_json, print_rows
    from warehouse.engine import check_reachable
    from warehouse.queries import has_schema, ledger_counts, series_summary

    provider, symbols, timeframe = _filters(args)
    engine = check_reachable(args.warehouse)
    if not has_schema(engine):
        if args.json:
            print_json([])
            return 0
        out.print("the warehouse is empty: run candleflow backfill first")
        return 0
    every = every_ticker(symbols)
    series = series_summary(engine, provider, None if every else symbols, timeframe)
    counts = ledger_counts(engine, provider, None if every or symbols is None else [*symbols, EVERY_SYMBOL], timeframe)
    by_series: dict[tuple[str, str, str], dict[str, int]] = {}
    for row in counts.itertuples():
        by_series.setdefault((row.provider, row.symbol, row.timeframe), {})[str(row.status)] = int(row.chunks)
    whole = {(p, tf) for (p, symbol, tf) in by_series if symbol == EVERY_SYMBOL}
    rows = [] if every else _series_rows(engine, series)
    rows += _every_rows(engine, series, sorted(whole))
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
        "lag",
        "chunks " + "/".join(LedgerStatus),
        title="candleflow coverage (sessions: the symbol's exchange calendar from first to last bar; lag: closed "
        "sessions since the last bar)",
    )
    listed: list[dict[str, Any]] = []
    plain: list[list[str]] = []
    intraday_of: dict[str, bool] = {}
    for item in sorted(rows, key=lambda r: (r["provider"], r["symbol"] != EVERY_SYMBOL, r["symbol"], r["timeframe"])):
        key = (item["provider"], item["symbol"], item["timeframe"])
        by_status = by_series.get(key, {})
        in_every = item["symbol"] != EVERY_SYMBOL and (item["provider"], item["timeframe"]) in whole
        chunk_text = "/".join(str(by_status.get(str(s), 0)) for s in LedgerStatus)
        if in_every and not by_status:
            chunk_text = "in ALL"
        shown = shown_symbol(item["symbol"])
        intraday = intraday_of.setdefault(item["timeframe"], get_timeframe(item["timeframe"]).intraday)
        lag = item.pop("lag")
        listed.append(
            {
                **item,
                "symbol": shown,
                "first": item["first"].isoformat(),
                "last": item["last"].isoformat(),
                "lag_sessions": lag,
                "chunks": {str(s): int(by_status.get(str(s), 0)) for s in LedgerStatus},
            }
        )
        values = [
            item["provider"],
            shown,
            item["timeframe"],
            f"{item['bars']:,}",
            _when(item["first"], intraday),
            _when(item["last"], intraday),
            str(item["sessions"]),
            str(item["missing"]),
            str(item["partial"]),
            "" if lag is None else str(lag),
            chunk_text,
        ]
        plain.append(values)
        if not args.json and len(rows) <= PLAIN_ABOVE_ROWS:  # a big table prints as plain rows (print_rows)
            table.add_row(*cells(*values))
    if args.json:
        print_json(listed)
        return 0
    print_rows(table, [str(c.header) for c in table.columns], plain, str(table.title))
    if not rows:
        out.print("no bars match these filters")
    return 0


def _series_rows(engine: Any, series: Any) -> list[dict[str, Any]]:
    """Each series' coverage from its first to its last bar, measured per provider, timeframe and calendar at
    once (one schedule, one count of bars per session) rather than series by series: 11,000 series in seconds.
    Daily bars are one per session, so a daily series misses as many sessions as it has bars fewer."""
    import numpy as np

    from candleflow.coverage import SessionState
    from candleflow.freshness import newest_lags
    from candleflow.sessions import schedule
    from candleflow.settings import run_settings
    from candleflow.timeframes import get_timeframe
    from flows.form import flag_name
    from flows.inputs import symbol_calendars
    from warehouse.coverage import measure_coverage

    if series.empty:
        return []
    calendars = symbol_calendars(None, sorted(set(series.symbol)), run_settings().calendars, flag_name)
    series = series.assign(calendar=[calendars[s] for s in series.symbol])
    out: list[dict[str, Any]] = []
    for (provider, timeframe, calendar), group in series.groupby(["provider", "timeframe", "calendar"], sort=False):
        first, last = group["first"].min().date(), group["last"].max().date()
        tf = get_timeframe(str(timeframe))
        behind = newest_lags(group["last"], tf, str(calendar))[1]
        measured: dict[str, list[Any]] = {}
        if tf.intraday:
            measured = measure_coverage(
                engine,
                str(provider),
                list(group.symbol),
                str(timeframe),
                first,
                last,
                calendar=str(calendar),
                partial=_counts_partial(str(provider)),
                closed_only=False,
            )
        else:
            days = np.array(schedule(first, last, str(calendar)).index.date, dtype="datetime64[D]")
        for row, lag in zip(group.itertuples(), behind, strict=True):
            a, b = row.first.date(), row.last.date()
            if tf.intraday:
                coverage = [c for c in measured[row.symbol] if a <= c.session <= b]
                gaps = [c for c in coverage if c.state is not SessionState.COMPLETE]
                sessions, missing = len(coverage), sum(g.present == 0 for g in gaps)
                partial = len(gaps) - missing
            else:
                span = np.searchsorted(days, np.datetime64(b, "D"), "right") - np.searchsorted(
                    days, np.datetime64(a, "D")
                )
                sessions, missing, partial = int(span), max(0, int(span) - int(row.bars)), 0
            out.append(
                {
                    "provider": str(provider),
                    "symbol": str(row.symbol),
                    "timeframe": str(timeframe),
                    "calendar": str(calendar),
                    "bars": int(row.bars),
                    "first": row.first,
                    "last": row.last,
                    "sessions": sessions,
                    "missing": missing,
                    "partial": partial,
                    "lag": lag,
                }
            )
    return out


def _every_rows(engine: Any, series: Any, whole: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """A row per provider and timeframe loaded as every ticker: all its tickers' bars, and its sessions as `gaps
    --symbols ALL` counts them (one held when its file loaded whole)."""
    import pandas as pd

    from candleflow.coverage import SessionState
    from candleflow.freshness import newest_lags
    from candleflow.model import EVERY_SYMBOL
    from candleflow.sessions import DEFAULT_CALENDAR
    from candleflow.timeframes import get_timeframe
    from warehouse.coverage import measure_coverage

    out: list[dict[str, Any]] = []
    for provider, timeframe in whole:
        mine = series[(series.provider == provider) & (series.timeframe == timeframe)]
        if mine.empty:
            continue
        first, last = mine["first"].min(), mine["last"].max()
        (coverage,) = measure_coverage(
            engine,
            provider,
            [EVERY_SYMBOL],
            timeframe,
            first.date(),
            last.date(),
            calendar=DEFAULT_CALENDAR,
            partial=True,
            closed_only=False,
        ).values()
        gaps = [c for c in coverage if c.state is not SessionState.COMPLETE]
        missing = sum(g.present == 0 for g in gaps)
        out.append(
            {
                "provider": provider,
                "symbol": EVERY_SYMBOL,
                "timeframe": timeframe,
                "calendar": DEFAULT_CALENDAR,
                "bars": int(mine["bars"].sum()),
                "first": first,
                "last": last,
                "sessions": len(coverage),
                "missing": missing,
                "partial": len(gaps) - missing,
                "lag": newest_lags(pd.Series([last]), get_timeframe(timeframe), DEFAULT_CALENDAR)[1][0],
            }
        )
    return out


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
    from candleflow.model import EVERY_SYMBOL, every_ticker, shown_symbol
    from candleflow.sessions import check_in_range
    from candleflow.settings import run_settings
    from candleflow.timeframes import get_timeframe
    from cli.output import cells, out, print_json
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
                "symbol": shown_symbol(symbol),
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
            if symbol == EVERY_SYMBOL:  # every ticker: the bars of any, of those its files loaded
                loaded = f"{present:,} of {expected:,}" if expected > r.sessions else f"{present:,}"
                table.add_row(*cells(shown_symbol(symbol), when, r.state, loaded, r.reason))
            else:
                table.add_row(*cells(symbol, when, r.state, f"{present}/{expected}", r.reason))
    if args.json:
        print_json(found)
        return 0 if not found else 1
    if found:
        out.print(table)
    what = "missing or partial bars" if counts_partial else "no bars"
    out.print(f"{len(found)} session(s) with {what} out of {expected_total} expected")
    if every_ticker(symbols):
        out.print("(ALL: a session is held when its file or grouped answer was loaded; name a ticker for its own gaps)")
    elif not counts_partial:
        out.print(f"({provider} has no bar for an interval without trades, so short sessions are not gaps)")
    return 0 if not found else 1
