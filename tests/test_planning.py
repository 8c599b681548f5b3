import datetime as dt
from dataclasses import replace

import pandas as pd
import pytest

from candleflow.errors import BadInputError
from candleflow.model import Chunk, LedgerEntry, LedgerStatus
from candleflow.planning import (
    PlanMode,
    batch_chunks,
    incremental_start,
    parse_mode,
    period_windows,
    plan_chunks,
    request_window,
    select_chunks,
)
from candleflow.sessions import expected_bars_per_session, previous_session, schedule
from candleflow.timeframes import ChunkPeriod, get_timeframe

D = dt.date


def ts(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


def test_daily_chunks_are_five_year_blocks_clipped_to_the_request() -> None:
    chunks = plan_chunks("synthetic", ["AAPL"], get_timeframe("1d"), D(2013, 6, 15), D(2026, 2, 27))
    assert [(c.window_start, c.window_end) for c in chunks] == [
        (ts("2013-06-15"), ts("2015-01-01")),
        (ts("2015-01-01"), ts("2020-01-01")),
        (ts("2020-01-01"), ts("2025-01-01")),
        (ts("2025-01-01"), ts("2026-02-28")),
    ]
    assert [c.period() for c in chunks[1:3]] == ["2015-2019", "2020-2024"]
    (inside,) = plan_chunks("synthetic", ["AAPL"], get_timeframe("1d"), D(2022, 6, 15), D(2024, 2, 29))
    assert (inside.window_start, inside.window_end) == (ts("2022-06-15"), ts("2024-03-01"))


def test_hourly_chunks_are_quarters_and_minute_chunks_are_months() -> None:
    hourly = plan_chunks("synthetic", ["X"], get_timeframe("1h"), D(2024, 2, 10), D(2024, 7, 1))
    assert [c.window_start for c in hourly] == [ts("2024-02-10"), ts("2024-04-01"), ts("2024-07-01")]
    assert hourly[-1].window_end == ts("2024-07-02")
    for tf in ("1m", "5m", "15m"):
        minute = plan_chunks("synthetic", ["X"], get_timeframe(tf), D(2024, 1, 31), D(2024, 3, 1))
        assert [c.window_start for c in minute] == [ts("2024-01-31"), ts("2024-02-01"), ts("2024-03-01")]


def test_window_crossing_a_year_end_splits_at_midnight_utc() -> None:
    chunks = plan_chunks("synthetic", ["X"], get_timeframe("1m"), D(2023, 12, 29), D(2024, 1, 2))
    assert [(c.window_start, c.window_end) for c in chunks] == [
        (ts("2023-12-29"), ts("2024-01-01")),
        (ts("2024-01-01"), ts("2024-01-03")),
    ]


def test_one_day_request_and_symbol_order() -> None:
    chunks = plan_chunks("synthetic", ["B", "A"], get_timeframe("1d"), D(2024, 7, 4), D(2024, 7, 4))
    assert [(c.symbol, c.window_start, c.window_end) for c in chunks] == [
        ("B", ts("2024-07-04"), ts("2024-07-05")),
        ("A", ts("2024-07-04"), ts("2024-07-05")),
    ]


def test_period_windows_empty_and_exact_boundaries() -> None:
    assert period_windows(ts("2024-01-01"), ts("2024-01-01"), ChunkPeriod.YEAR) == []
    assert period_windows(ts("2024-01-01"), ts("2025-01-01"), ChunkPeriod.YEAR) == [
        (ts("2024-01-01"), ts("2025-01-01"))
    ]
    assert len(period_windows(ts("2024-01-01"), ts("2025-01-01"), ChunkPeriod.QUARTER)) == 4


def test_request_window_is_half_open_over_inclusive_dates() -> None:
    assert request_window(D(2024, 3, 1), D(2024, 3, 31)) == (ts("2024-03-01"), ts("2024-04-01"))


def test_sessions_skip_holidays_and_know_early_closes() -> None:
    sched = schedule(D(2024, 7, 1), D(2024, 7, 8))
    dates = [d.date() for d in sched.index]
    assert D(2024, 7, 4) not in dates  # Independence Day
    assert D(2024, 7, 6) not in dates  # Saturday
    assert sched.loc["2024-07-03", "close"] == ts("2024-07-03 17:00")  # 13:00 New York early close
    assert sched.loc["2024-07-05", "close"] == ts("2024-07-05 20:00")


def test_sessions_follow_dst_in_utc() -> None:
    sched = schedule(D(2024, 3, 8), D(2024, 3, 11))
    assert sched.loc["2024-03-08", "open"] == ts("2024-03-08 14:30")  # EST
    assert sched.loc["2024-03-11", "open"] == ts("2024-03-11 13:30")  # EDT after the 2024-03-10 change


def test_expected_bars_per_session() -> None:
    sched = schedule(D(2024, 11, 27), D(2024, 11, 29))  # 29th: early close at 13:00 New York
    assert expected_bars_per_session(sched, get_timeframe("1m")).tolist() == [390, 210]
    assert expected_bars_per_session(sched, get_timeframe("1h")).tolist() == [7, 4]
    assert expected_bars_per_session(sched, get_timeframe("1d")).tolist() == [1, 1]
    assert expected_bars_per_session(sched, get_timeframe("15m")).tolist() == [26, 14]


def test_previous_session_skips_weekends_and_holidays() -> None:
    assert previous_session(D(2024, 7, 5)) == D(2024, 7, 3)
    assert previous_session(D(2024, 7, 6)) == D(2024, 7, 5)
    assert previous_session(D(2024, 1, 2)) == D(2023, 12, 29)


def _entry(chunk: Chunk, status: LedgerStatus, end: pd.Timestamp | None = None) -> LedgerEntry:
    return LedgerEntry(
        chunk.provider, chunk.symbol, chunk.timeframe, chunk.window_start, end or chunk.window_end, status
    )


def test_select_missing_skips_loaded_and_empty_but_not_rejected_or_failed() -> None:
    chunks = plan_chunks("synthetic", ["A", "B", "C", "D", "E"], get_timeframe("1d"), D(2024, 1, 1), D(2024, 12, 31))
    a, b, c, d, _ = chunks
    ledger = [
        _entry(a, LedgerStatus.LOADED),
        _entry(b, LedgerStatus.EMPTY),
        _entry(c, LedgerStatus.REJECTED),
        _entry(d, LedgerStatus.FAILED),
    ]
    selection = select_chunks(chunks, ledger, PlanMode.MISSING)
    assert [x.symbol for x in selection.todo] == ["C", "D", "E"]
    assert [x.symbol for x in selection.skipped] == ["A", "B"]
    assert [x.symbol for x in select_chunks(chunks, ledger, PlanMode.FAILED).todo] == ["C", "D"]
    assert len(select_chunks(chunks, ledger, PlanMode.ALL).todo) == 5


def test_a_ledger_row_for_a_shorter_window_does_not_cover_a_longer_chunk() -> None:
    (chunk,) = plan_chunks("synthetic", ["A"], get_timeframe("1d"), D(2024, 1, 1), D(2024, 12, 31))
    partial = _entry(chunk, LedgerStatus.LOADED, end=ts("2024-07-01"))
    assert select_chunks([chunk], [partial], PlanMode.MISSING).todo == [chunk]
    (inner,) = plan_chunks("synthetic", ["A"], get_timeframe("1d"), D(2024, 3, 1), D(2024, 3, 31))
    full = _entry(chunk, LedgerStatus.LOADED)
    assert select_chunks([inner], [full], PlanMode.MISSING).skipped == [inner]


def test_year_rows_of_an_older_ledger_cover_a_five_year_chunk_end_to_end() -> None:
    (chunk,) = plan_chunks("synthetic", ["A"], get_timeframe("1d"), D(2020, 1, 1), D(2024, 12, 31))
    years = [
        LedgerEntry("synthetic", "A", "1d", ts(f"{y}-01-01"), ts(f"{y + 1}-01-01"), LedgerStatus.LOADED)
        for y in range(2020, 2025)
    ]
    assert select_chunks([chunk], years, PlanMode.MISSING).skipped == [chunk]

    def year(y: int) -> Chunk:  # of a chunk not held, only the years not held are fetched
        return replace(chunk, window_start=ts(f"{y}-01-01"), window_end=ts(f"{y + 1}-01-01"))

    assert select_chunks([chunk], years[:2] + years[3:], PlanMode.MISSING).todo == [year(2022)]  # 2022 missing
    failed = replace(years[2], status=LedgerStatus.FAILED)
    assert select_chunks([chunk], [*years[:2], failed, *years[3:]], PlanMode.FAILED).todo == [year(2022)]
    # a row fetched mid-window holds only as far as it was final then
    unfinished = replace(years[4], complete_through=ts("2024-06-01"))
    assert select_chunks([chunk], [*years[:4], unfinished], PlanMode.MISSING).todo == [year(2024)]
    deleted = replace(years[1], rows=252, present=100)  # bars deleted behind the ledger's back
    assert select_chunks([chunk], [years[0], deleted, *years[2:]], PlanMode.MISSING).todo == [year(2021)]


def test_small_chunks_share_a_task_and_requests_stay_whole() -> None:
    daily = plan_chunks("synthetic", [f"S{i}" for i in range(500)], get_timeframe("1d"), D(2020, 1, 1), D(2024, 12, 31))
    batches = batch_chunks(daily, 1, rows=50_000, max_chunks=100, workers=4)
    assert sorted(c for b in batches for c in b) == sorted(daily)
    assert 10 <= len(batches) <= 15 and max(len(b) for b in batches) <= 100
    two = plan_chunks("synthetic", ["A", "B"], get_timeframe("1h"), D(2024, 1, 1), D(2024, 3, 31))
    assert batch_chunks(two, 1, rows=50_000, max_chunks=100, workers=4) == [[two[0]], [two[1]]]  # still parallel
    days = [D(2024, 3, d) for d in (4, 5, 6, 7, 8)]
    grouped = plan_chunks(
        "flatfiles", ["A", "B", "C"], get_timeframe("1d"), days[0], days[-1], period=ChunkPeriod.SESSION, sessions=days
    )
    per_request = batch_chunks(grouped, 3, rows=1, max_chunks=2, workers=1)
    assert len(per_request) == 5
    for batch in per_request:
        assert len({c.window_start for c in batch}) == 1 and len(batch) == 3  # a request is never split
    assert len(batch_chunks(grouped, 3, rows=1000, max_chunks=6, workers=1)) == 3  # two requests a task, at most
    calendars = [replace(c, calendar="XLON") if c.symbol == "B" else c for c in two]
    assert all(len({c.calendar for c in b}) == 1 for b in batch_chunks(calendars, 1, rows=10**6, max_chunks=9))


def test_ledger_rows_of_other_series_do_not_count() -> None:
    (chunk,) = plan_chunks("synthetic", ["A"], get_timeframe("1d"), D(2024, 1, 1), D(2024, 12, 31))
    other_tf = LedgerEntry("synthetic", "A", "1h", chunk.window_start, chunk.window_end, LedgerStatus.LOADED)
    other_provider = LedgerEntry("csv", "A", "1d", chunk.window_start, chunk.window_end, LedgerStatus.LOADED)
    assert select_chunks([chunk], [other_tf, other_provider], PlanMode.MISSING).todo == [chunk]


def test_incremental_start() -> None:
    daily, minute = get_timeframe("1d"), get_timeframe("1m")
    today = D(2024, 7, 10)
    assert incremental_start(None, daily, today, 30, None, None) == D(2024, 6, 10)
    assert incremental_start(ts("2024-07-05"), daily, today, 30, None, D(2024, 7, 3)) == D(2024, 7, 3)
    assert incremental_start(ts("2024-07-05 19:59"), minute, today, 30, None, None) == D(2024, 7, 4)
    assert incremental_start(ts("2024-07-05"), daily, today, 30, dt.timedelta(days=5), D(2024, 7, 3)) == D(2024, 6, 30)


def test_bad_mode_and_timeframe_name_the_valid_ones() -> None:
    with pytest.raises(BadInputError, match="missing, failed, all"):
        parse_mode("some")
    with pytest.raises(BadInputError, match="1m, 5m, 15m, 1h, 1d"):
        get_timeframe("2h")
