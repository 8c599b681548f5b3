"""Coverage of a run's series, read from the warehouse: what `candleflow gaps` reports, for the flows to repair
what is missing and to publish a symbol-by-month grid."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from prefect import task
from prefect.cache_policies import NO_CACHE

from candleflow.coverage import SessionCoverage, classify_sessions, hours_counted
from candleflow.model import LedgerEntry
from candleflow.planning import request_window
from candleflow.sessions import closed_sessions, expected_bars_per_session
from candleflow.timeframes import get_timeframe
from warehouse.engine import check_reachable
from warehouse.queries import bars_per_session_of, has_schema, read_ledger


@task(name="measure_coverage", cache_policy=NO_CACHE)
def measure_coverage(
    warehouse_url: str | None,
    provider: str,
    symbols: Sequence[str],
    timeframe: str,
    start: dt.date,
    end: dt.date,
    *,
    calendar: str,
    partial: bool,
) -> dict[str, list[SessionCoverage]]:
    """Every closed session of `calendar` in start..end, per symbol, with its state (complete, partial,
    explained, missing) and reason. `partial=False` for vendors that send no bar without trades."""
    sched = closed_sessions(start, end, calendar)
    engine = check_reachable(warehouse_url)
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
