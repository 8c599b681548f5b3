"""Coverage of series as the warehouse holds them: every session of a calendar with its state and reason
(candleflow.coverage decides; this reads the counts and the ledger). The one coverage query: what `status`
counts, what `gaps` reports, what `repair_gaps` fetches again, and the grid a run publishes."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import replace

import pandas as pd
import sqlalchemy as sa

from candleflow.coverage import SessionCoverage, classify_sessions, hours_counted
from candleflow.model import EVERY_SYMBOL, LedgerEntry, LedgerStatus, every_ticker
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
    if every_ticker(symbols):
        return {EVERY_SYMBOL: _every_ticker(engine, provider, timeframe, start, end, calendar, closed_only)}
    sched = closed_sessions(start, end, calendar) if closed_only else schedule(start, end, calendar)
    stored = has_schema(engine)
    tf = get_timeframe(timeframe)
    window = request_window(start, end)
    hours = hours_counted(partial)
    counts = bars_per_session_of(engine, provider, symbols, tf.name, *window, calendar, hours) if stored else {}
    # the rows of chunks of every ticker (`--symbols ALL`, one per file and date) hold each ticker's sessions too
    ledger = read_ledger(engine, provider, symbols, tf.name) if stored else []
    whole_files = read_ledger(engine, provider, [EVERY_SYMBOL], tf.name, count_bars=True) if stored else []
    expected = expected_bars_per_session(sched, tf)
    by_symbol: dict[str, list[LedgerEntry]] = {}
    for entry in ledger:
        by_symbol.setdefault(entry.symbol, []).append(entry)
    # A whole file read (a chunk of every ticker) without a ticker's bar: the vendor had none for it that session.
    # Unless its window holds fewer bars than it loaded (deleted since): which ticker lost them is not recorded,
    # so each ticker's missing session there is unexplained, and a repair reads the file again.
    every = [
        replace(e, status=LedgerStatus.EMPTY) if e.status is LedgerStatus.LOADED and e.intact else e
        for e in whole_files
    ]
    return {
        symbol: classify_sessions(
            sched,
            tf,
            counts.get(symbol, {}),
            by_symbol.get(symbol, []) + every,
            partial=partial,
            expected=expected,
        )
        for symbol in symbols
    }


def _every_ticker(
    engine: sa.Engine, provider: str, timeframe: str, start: dt.date, end: dt.date, calendar: str, closed_only: bool
) -> list[SessionCoverage]:
    """The sessions of every ticker together (`--symbols ALL`): a session is held when its bars (any ticker's)
    number at least what its file or grouped answer loaded (its ledger row of every ticker), or, without such a
    row, when any ticker has a bar; a session whose window lost bars since it loaded is partial, so a repair
    reads its file again."""
    sched = closed_sessions(start, end, calendar) if closed_only else schedule(start, end, calendar)
    tf = get_timeframe(timeframe)
    if not has_schema(engine):
        return classify_sessions(sched, tf, {}, [], partial=True, expected=pd.Series(1, index=sched.index))
    window = request_window(start, end)
    counts = bars_per_session_of(engine, provider, [EVERY_SYMBOL], tf.name, *window, calendar, "extended")
    entries = read_ledger(engine, provider, [EVERY_SYMBOL], tf.name)
    loaded = {
        (e.window_start + pd.Timedelta(hours=12)).date(): e.rows
        for e in entries
        if e.status in (LedgerStatus.LOADED, LedgerStatus.PARTIAL) and e.rows
    }
    expected = pd.Series([loaded.get(day, 1) for day in sched.index.date], index=sched.index, dtype="int64")
    return classify_sessions(sched, tf, counts.get(EVERY_SYMBOL, {}), entries, partial=True, expected=expected)
