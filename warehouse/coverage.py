"""Coverage of series as the warehouse holds them: every session of a calendar with its state and reason
(candleflow.coverage decides; this reads the counts and the ledger). The one coverage query: what `status`
counts, what `gaps` reports, what `repair_gaps` fetches again, and the grid a run publishes."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import sqlalchemy as sa

from candleflow.coverage import SessionCoverage, classify_sessions, hours_counted
from candleflow.model import LedgerEntry
from candleflow.planning import request_window
from candleflow.sessions import closed_sessions, expected_bars_per_session, schedule
from candleflow.timeframes import get_timeframe
from warehouse.engine import check_reachable
from warehouse.queries import bars_per_session_of, has_schema, read_ledger


def measure_coverage(
    warehouse: sa.Engine | str | None,
    provider: str,
    symbols: Sequence[str],
    timeframe: str,
    start: dt.date,
    end: dt.date,
    *,
    calendar: str,
    partial: bool,
    closed_only: bool = True,
) -> dict[str, list[SessionCoverage]]:
    """Every closed session of `calendar` in start..end, per symbol, with its state (complete, partial,
    explained, missing) and reason. `warehouse`: an engine the caller checked, or a URL (checked here).
    `partial=False` for vendors that send no bar without trades. `closed_only=False` keeps the sessions that had
    not closed yet (they are missing until they have bars)."""
    engine = warehouse if isinstance(warehouse, sa.Engine) else check_reachable(warehouse)
    sched = closed_sessions(start, end, calendar) if closed_only else schedule(start, end, calendar)
    stored = has_schema(engine)
    tf = get_timeframe(timeframe)
    window = request_window(start, end)
    hours = hours_counted(partial)
    counts = bars_per_session_of(engine, provider, symbols, tf.name, *window, calendar, hours) if stored else {}
    ledger = read_ledger(engine, provider, symbols, tf.name) if stored else []
    expected = expected_bars_per_session(sched, tf)
    by_symbol: dict[str, list[LedgerEntry]] = {}
    for entry in ledger:
        by_symbol.setdefault(entry.symbol, []).append(entry)
    return {
        symbol: classify_sessions(
            sched, tf, counts.get(symbol, {}), by_symbol.get(symbol, []), partial=partial, expected=expected
        )
        for symbol in symbols
    }
