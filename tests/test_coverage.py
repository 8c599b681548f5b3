"""Coverage states, the ranges `repair_gaps` fetches, the coverage grid, and the names runs give their chunks."""

import datetime as dt

import pandas as pd

from candleflow.coverage import (
    Reason,
    SessionState,
    classify_sessions,
    coverage_markdown,
    incomplete_ranges,
    month_cell,
    repair_ranges,
)
from candleflow.model import Chunk, LedgerEntry, LedgerStatus
from candleflow.sessions import closed_sessions, expected_bars_per_session, schedule
from candleflow.timeframes import get_timeframe
from tasks.ingest import group_task_name

D = dt.date
UTC = "UTC"


def entry(start: str, end: str, status: LedgerStatus) -> LedgerEntry:
    return LedgerEntry("p", "AAPL", "1h", pd.Timestamp(start, tz=UTC), pd.Timestamp(end, tz=UTC), status)


def test_each_session_gets_a_state_and_a_reason() -> None:
    sched = schedule(D(2024, 3, 1), D(2024, 3, 15))  # 11 sessions, 7 hourly bars each
    bars = {D(2024, 3, day): 7 for day in (1, 6, 8)} | {D(2024, 3, 4): 3}
    ledger = [
        entry("2024-03-01", "2024-03-07", LedgerStatus.LOADED),  # the 5th lost its bars after loading
        entry("2024-03-07", "2024-03-08", LedgerStatus.EMPTY),  # the provider had none for the 7th
        entry("2024-03-08", "2024-03-11", LedgerStatus.LOADED),
        entry("2024-03-11", "2024-03-12", LedgerStatus.REJECTED),
        entry("2024-03-12", "2024-03-13", LedgerStatus.FAILED),
    ]
    got = [(c.session.day, c.state, c.reason) for c in classify_sessions(sched, get_timeframe("1h"), bars, ledger)]
    assert got == [
        (1, SessionState.COMPLETE, None),
        (4, SessionState.PARTIAL, Reason.UNEXPLAINED),
        (5, SessionState.MISSING, Reason.UNEXPLAINED),
        (6, SessionState.COMPLETE, None),
        (7, SessionState.EXPLAINED, Reason.EMPTY),
        (8, SessionState.COMPLETE, None),
        (11, SessionState.EXPLAINED, Reason.REJECTED),
        (12, SessionState.MISSING, Reason.FAILED),
        (13, SessionState.MISSING, Reason.NOT_FETCHED),
        (14, SessionState.MISSING, Reason.NOT_FETCHED),
        (15, SessionState.MISSING, Reason.NOT_FETCHED),
    ]


def test_vendors_that_send_no_bar_without_trades_are_complete_with_any_bar() -> None:
    sched = schedule(D(2024, 3, 4), D(2024, 3, 4))
    (c,) = classify_sessions(sched, get_timeframe("1m"), {D(2024, 3, 4): 12}, [], partial=False)
    assert c.state is SessionState.COMPLETE


def test_repair_ranges_join_consecutive_sessions_across_weekends_and_skip_explained_ones() -> None:
    sched = schedule(D(2024, 3, 1), D(2024, 3, 20))
    days = [d.date() for d in sched.index]
    bars = {d: 1 for d in days if d not in (D(2024, 3, 1), D(2024, 3, 4), D(2024, 3, 12), D(2024, 3, 13))}
    ledger = [
        LedgerEntry("p", "AAPL", "1d", pd.Timestamp(s, tz=UTC), pd.Timestamp(e, tz=UTC), st)
        for s, e, st in [
            ("2024-03-01", "2024-03-12", LedgerStatus.LOADED),
            ("2024-03-12", "2024-03-13", LedgerStatus.EMPTY),
            ("2024-03-13", "2024-03-21", LedgerStatus.FAILED),
        ]
    ]
    coverage = classify_sessions(sched, get_timeframe("1d"), bars, ledger)
    assert repair_ranges(coverage) == [(D(2024, 3, 1), D(2024, 3, 4)), (D(2024, 3, 13), D(2024, 3, 13))]
    ranges = incomplete_ranges(coverage)
    assert [(r.first, r.last, r.sessions, r.state) for r in ranges] == [
        (D(2024, 3, 1), D(2024, 3, 4), 2, SessionState.MISSING),
        (D(2024, 3, 12), D(2024, 3, 12), 1, SessionState.EXPLAINED),
        (D(2024, 3, 13), D(2024, 3, 13), 1, SessionState.MISSING),
    ]


def test_the_grid_shows_each_month_by_its_worst_session() -> None:
    sched = schedule(D(2024, 1, 1), D(2024, 3, 31))
    days = [d.date() for d in sched.index]
    bars = {d: 7 for d in days if d.month == 1} | {d: 7 for d in days if d.month == 3} | {D(2024, 3, 28): 2}
    coverage = classify_sessions(sched, get_timeframe("1h"), bars, [])
    text = coverage_markdown("AAPL coverage", {"AAPL 1h": coverage})
    row = next(line for line in text.splitlines() if line.startswith("| AAPL 1h | 2024 |"))
    assert row.split(" | ")[2:5] == ["■\u00a021", "□\u00a00/20", "◩\u00a019/20"]
    assert "Sessions: 40 complete, 0 explained, 1 partial, 20 missing" in text
    assert "| AAPL 1h | 2024-02-01..2024-02-29 (20) | missing | not fetched yet" in text
    assert "| AAPL 1h | 2024-03-28 | partial | not fetched yet" in text
    assert month_cell([]) == ""


def test_many_series_in_one_grid_each_keep_their_own_rows_and_totals() -> None:
    """Complete series share their entries (worked out once for the grid); one with a hole among them keeps it."""
    sched = schedule(D(2024, 1, 1), D(2024, 2, 29))
    days = [d.date() for d in sched.index]
    expected = expected_bars_per_session(sched, get_timeframe("1d"))
    full = {d: 1 for d in days}
    holed = {d: 1 for d in days if d != D(2024, 2, 5)}
    series = {
        f"{name} 1d": classify_sessions(sched, get_timeframe("1d"), bars, [], expected=expected)
        for name, bars in [("A", full), ("B", holed), ("C", full)]
    }
    assert series["A 1d"] == series["C 1d"] and series["A 1d"] != series["B 1d"]
    text = coverage_markdown("three", series)
    rows = {line.split(" | ")[0][2:]: line.split(" | ")[2:4] for line in text.splitlines() if " | 2024 | " in line}
    assert rows == {
        "A 1d": ["■\u00a021", "■\u00a020"],
        "B 1d": ["■\u00a021", "□\u00a019/20"],
        "C 1d": ["■\u00a021", "■\u00a020"],
    }
    assert f"Sessions: {3 * len(days) - 1} complete, 0 explained, 0 partial, 1 missing" in text
    (hole,) = [line for line in text.splitlines() if "2024-02-05" in line]
    assert hole.startswith("| B 1d | 2024-02-05 | missing | not fetched yet")


def test_sessions_not_closed_yet_are_left_out() -> None:
    now = pd.Timestamp("2024-03-05 18:00", tz=UTC)  # 13:00 in New York: the 5th is trading
    days = [d.date() for d in closed_sessions(D(2024, 3, 1), D(2024, 3, 8), now=now).index]
    assert days == [D(2024, 3, 1), D(2024, 3, 4)]


def test_chunks_are_named_by_their_calendar_period() -> None:
    def chunk(symbol: str, tf: str, start: str, end: str) -> Chunk:
        return Chunk("synthetic", symbol, tf, pd.Timestamp(start, tz=UTC), pd.Timestamp(end, tz=UTC))

    assert chunk("AAPL", "1m", "2024-03-01", "2024-04-01").task_name() == "ingest AAPL 1m 2024-03"
    assert chunk("AAPL", "1h", "2024-04-01", "2024-07-01").task_name() == "ingest AAPL 1h 2024-Q2"
    assert chunk("AAPL", "1d", "2023-01-01", "2024-01-01").task_name() == "ingest AAPL 1d 2023"
    assert chunk("AAPL", "1d", "2023-06-01", "2024-01-01").task_name() == "ingest AAPL 1d 2023-06-01..2023-12-31"
    # an intraday flat-file chunk: one New York day, across the DST change
    assert chunk("SPY", "1m", "2024-03-10 05:00", "2024-03-11 04:00").period() == "2024-03-10"
    group = [chunk(s, "1d", "2024-03-05", "2024-03-06") for s in ("AAPL", "MSFT")]
    assert group_task_name(group) == "ingest AAPL,MSFT 1d 2024-03-05"
    many = [chunk(f"S{i}", "1d", "2024-03-05", "2024-03-06") for i in range(40)]
    assert group_task_name(many) == "ingest 40 symbols 1d 2024-03-05"
