"""Issue #10: each defect found by loading real files and injecting faults, reproduced first, then kept fixed."""

import datetime as dt
from pathlib import Path

import pandas as pd
import pytest

from candleflow.model import LedgerStatus
from flows.backfill import historical_backfill
from flows.incremental import incremental_update
from tests.providers_support import csv_run, synthetic_bars
from warehouse.engine import get_engine
from warehouse.queries import read_ledger

pytestmark = [pytest.mark.flows, pytest.mark.usefixtures("prefect_harness")]
D = dt.date


def yahoo_file(path: Path, start: str, end: str, symbol: str = "AAPL") -> Path:
    daily = synthetic_bars(symbol, "1d", pd.Timestamp(start, tz="UTC"), pd.Timestamp(end, tz="UTC"))
    pd.DataFrame(
        {
            "Date": daily["ts"].dt.strftime("%Y-%m-%d"),
            "Open": daily["open"],
            "High": daily["high"],
            "Low": daily["low"],
            "Close": daily["close"],
            "Volume": daily["volume"],
        }
    ).to_csv(path / f"{symbol}.csv", index=False)
    return path


def test_windows_without_bars_end_empty_not_failed(sqlite_url: str, tmp_path: Path) -> None:
    options = {"directory": str(yahoo_file(tmp_path, "2014-01-01", "2015-01-01"))}
    summary = historical_backfill(
        provider="csv",
        symbols=["AAPL"],
        start=D(2008, 1, 1),
        end=D(2020, 12, 31),
        warehouse_url=sqlite_url,
        provider_options=options,
    )
    assert summary.ok and (summary.counts()["loaded"], summary.counts()["empty"]) == (1, 3)
    statuses = {e.window_start.year: e.status for e in read_ledger(get_engine(sqlite_url))}
    assert statuses == {  # five-year blocks, the first and last clipped to the request
        2008: LedgerStatus.EMPTY,
        2010: LedgerStatus.LOADED,
        2015: LedgerStatus.EMPTY,
        2020: LedgerStatus.EMPTY,
    }
    # past the file's last date, an update finds nothing new and says so; it does not fail
    update = incremental_update(
        provider="csv", symbols=["AAPL"], timeframes=["1d"], warehouse_url=sqlite_url, provider_options=options
    )
    assert update.ok


def test_a_holiday_window_of_the_synthetic_provider_is_empty(sqlite_url: str) -> None:
    summary = historical_backfill(
        symbols=["AAPL"], timeframe="1m", start=D(2024, 12, 25), end=D(2024, 12, 25), warehouse_url=sqlite_url
    )
    assert summary.ok
    assert [r.status for r in summary.results] in ([LedgerStatus.EMPTY], [])


def test_symbols_print_as_written_never_as_emoji(tmp_path: Path, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    from cli import main

    monkeypatch.chdir(tmp_path)
    argv = ["backfill", "--symbols", "CAR,DOG", "--start", "2024-01-01", "--end", "2024-01-31"]
    assert main([*argv, "--option", "invalid_chunk_rate=1"]) == 1
    out = capsys.readouterr().out
    assert "REJECTED synthetic:CAR:1d:2024-01-01..2024-01-31" in out and "synthetic:DOG:1d" in out
    assert main(["gaps", "--symbols", "CAR", "--start", "2024-01-02", "--end", "2024-01-03"]) == 1
    out = capsys.readouterr().out
    assert "CAR" in out and "\U0001f697" not in out and "\U0001f436" not in out


def test_a_connection_dropped_while_preparing_the_warehouse_is_retried(postgres_url: str, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """An uncommitted CREATE TABLE bars in another session makes the flow's own CREATE TABLE wait; the test then
    kills the waiting backend (pg_terminate_backend), as a database restart or a proxy would, and lets go."""
    import threading
    import time

    import sqlalchemy as sa

    monkeypatch.setenv("CANDLEFLOW_RETRY_BACKOFF_SECONDS", "0.2")
    blocker_engine = sa.create_engine(postgres_url, poolclass=sa.pool.NullPool)
    watcher_engine = sa.create_engine(postgres_url.split("?")[0], poolclass=sa.pool.NullPool)
    killed: list[int] = []
    blocker = blocker_engine.connect()
    blocker.begin()
    blocker.exec_driver_sql("CREATE TABLE bars (held int)")
    mine = blocker.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()

    def kill_the_waiting_backend() -> None:
        deadline = time.monotonic() + 60
        with watcher_engine.connect() as watcher:
            while time.monotonic() < deadline and not killed:
                pid = watcher.exec_driver_sql(
                    "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND pid <> %s "
                    "AND query ILIKE '%%CREATE TABLE bars%%'",
                    (mine,),
                ).scalar()
                if pid is not None:
                    watcher.exec_driver_sql("SELECT pg_terminate_backend(%s)", (pid,))
                    killed.append(pid)
                watcher.commit()  # pg_stat_activity is a snapshot per transaction
                time.sleep(0.05)
        blocker.rollback()
        blocker.close()

    thread = threading.Thread(target=kill_the_waiting_backend)
    thread.start()
    try:
        summary = historical_backfill(
            symbols=["AAPL"], start=D(2024, 1, 1), end=D(2024, 3, 31), warehouse_url=postgres_url
        )
    finally:
        thread.join()
    assert len(killed) == 1
    assert summary.ok and summary.counts()["loaded"] == 1 and summary.bars_written == 61


def test_gaps_groups_consecutive_sessions_and_lists_them_all_as_json(tmp_path: Path, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    import json

    from cli import main

    monkeypatch.chdir(tmp_path)
    run = ["backfill", "--symbols", "MSFT", "--start", "2024-01-01", "--end", "2024-12-31"]
    assert main([*run, "--option", "invalid_chunk_rate=1"]) == 1
    capsys.readouterr()
    gaps = ["gaps", "--symbols", "MSFT", "--start", "2024-01-01", "--end", "2025-01-10"]
    assert main(gaps) == 1
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if "MSFT" in line]
    assert len(rows) == 2, out  # the rejected year, then the sessions never fetched
    assert "2024-01-02..2024-12-31 (252)" in rows[0] and "explained" in rows[0] and "0/252" in rows[0]
    assert "2025-01-02..2025-01-10 (6)" in rows[1] and "missing" in rows[1] and "not fetched yet" in rows[1]
    assert out.splitlines()[-1] == "258 session(s) with missing or partial bars out of 258 expected"
    assert main([*gaps, "--json"]) == 1
    listed = json.loads(capsys.readouterr().out)
    assert len(listed) == 258 and listed[0] == {
        "symbol": "MSFT",
        "session": "2024-01-02",
        "state": "explained",
        "expected": 1,
        "present": 0,
        "reason": "chunk rejected by validation (see quarantine)",
    }


def test_each_named_csv_source_keeps_its_own_bars(sqlite_url: str, tmp_path: Path) -> None:
    import sqlalchemy as sa

    from candleflow.errors import BadInputError

    first, second = tmp_path / "yahoo", tmp_path / "quandl"
    first.mkdir(), second.mkdir()
    yahoo_file(first, "2024-01-01", "2024-04-01")
    yahoo_file(second, "2024-01-01", "2024-04-01")
    quandl = pd.read_csv(second / "AAPL.csv")
    quandl[["Open", "High", "Low", "Close"]] *= 2  # a different vendor's prices for the same symbol
    quandl.to_csv(second / "AAPL.csv", index=False)
    args = dict(provider="csv", symbols=["AAPL"], start=D(2024, 1, 1), end=D(2024, 3, 28), warehouse_url=sqlite_url)
    assert historical_backfill(**args, provider_options={"directory": str(first)}).counts()["loaded"] == 1
    unnamed = historical_backfill(**args, provider_options={"directory": str(second)})
    assert unnamed.results == [] and unnamed.skipped == 1
    assert unnamed.headline() == (
        "historical_backfill: nothing to fetch: all 1 planned chunks are already in the ledger as csv (another set "
        "of files for these symbols needs its own --option source=NAME; --mode all reloads these)"
    )
    named = historical_backfill(**args, provider_options={"directory": str(second), "source": "quandl"})
    assert named.counts()["loaded"] == 1 and named.bars_written == 61
    with get_engine(sqlite_url).connect() as conn:
        closes = dict(conn.execute(sa.text("SELECT provider, avg(close) FROM bars GROUP BY provider")).all())
    ledger = {e.provider for e in read_ledger(get_engine(sqlite_url))}
    assert set(closes) == ledger == {"csv", "csv:quandl"}
    assert closes["csv:quandl"] == pytest.approx(2 * closes["csv"])
    with pytest.raises(BadInputError, match="source 'Quandl Data': use 1-24 of a-z 0-9 _ -"):
        historical_backfill(**args, provider_options={"directory": str(second), "source": "Quandl Data"})


def test_a_window_reaching_past_now_is_complete_only_through_the_last_closed_session(sqlite_url: str) -> None:
    engine = get_engine(sqlite_url)
    args = dict(symbols=["AAPL"], start=D(2024, 1, 1), end=D(2024, 12, 31), warehouse_url=sqlite_url)
    friday_noon = {"now": "2024-06-14T16:00:00Z"}  # 12:00 in New York: June 14's session is still trading
    first = historical_backfill(**args, provider_options=friday_noon)
    assert first.ok and first.bars_written == 114  # the sessions of 2024 that had closed by then
    (entry,) = read_ledger(engine)
    assert entry.status is LedgerStatus.LOADED and entry.complete_through == pd.Timestamp("2024-06-14", tz="UTC")
    again = historical_backfill(**args, provider_options=friday_noon)  # not final: fetched again, nothing new
    assert len(again.results) == 1 and again.results[0].unchanged and again.bars_written == 0
    later = historical_backfill(**args, provider_options={"now": "2025-01-03T00:00:00Z"})
    assert later.ok and later.bars_written == 252 - 114
    (entry,) = read_ledger(engine)
    assert entry.rows == 252 and entry.complete_through == pd.Timestamp("2025-01-01", tz="UTC")
    assert historical_backfill(**args, provider_options={"now": "2025-01-03T00:00:00Z"}).results == []


def test_intraday_bars_of_a_session_still_trading_are_fetched_again_after_its_close(sqlite_url: str) -> None:
    args = dict(symbols=["AAPL"], timeframe="1m", start=D(2024, 6, 14), end=D(2024, 6, 14), warehouse_url=sqlite_url)
    mid = historical_backfill(**args, provider_options={"now": "2024-06-14T16:00:00Z"})
    assert mid.ok and mid.bars_written == 150  # 13:30..16:00 UTC
    (entry,) = read_ledger(get_engine(sqlite_url))
    assert entry.complete_through == pd.Timestamp("2024-06-14T13:30", tz="UTC")  # the session's open
    after = historical_backfill(**args, provider_options={"now": "2024-06-14T21:00:00Z"})
    assert after.ok and after.bars_written == 390 - 150
    assert historical_backfill(**args, provider_options={"now": "2024-06-14T21:00:00Z"}).results == []


def test_weekends_and_windows_in_the_future_end_empty_and_far_dates_are_refused(sqlite_url: str) -> None:
    from candleflow.errors import BadInputError

    weekend = historical_backfill(
        symbols=["AAPL"], timeframe="1m", start=D(2024, 6, 15), end=D(2024, 6, 16), warehouse_url=sqlite_url
    )
    assert weekend.ok and all(r.status is LedgerStatus.EMPTY for r in weekend.results)
    future = dict(symbols=["MSFT"], start=D(2024, 6, 10), end=D(2024, 6, 14), warehouse_url=sqlite_url)
    early = historical_backfill(**future, provider_options={"now": "2024-06-01T00:00:00Z"})
    assert early.ok and [r.status for r in early.results] == [LedgerStatus.EMPTY]
    filled = historical_backfill(**future, provider_options={"now": "2024-06-15T00:00:00Z"})
    assert filled.ok and filled.bars_written == 5
    far = dt.datetime.now(dt.UTC).date() + dt.timedelta(days=30)
    with pytest.raises(BadInputError, match=f"end {far} is more than 7 days after today"):
        historical_backfill(symbols=["AAPL"], start=D(2024, 1, 1), end=far, warehouse_url=sqlite_url)


def test_a_new_york_minute_file_read_as_utc_is_rejected_not_loaded_five_hours_off(
    sqlite_url: str, tmp_path: Path
) -> None:
    from candleflow.errors import IncompleteRunError

    minutes = synthetic_bars("AAPL", "1m", pd.Timestamp("2024-03-04", tz="UTC"), pd.Timestamp("2024-03-05", tz="UTC"))
    local = minutes["ts"].dt.tz_convert("America/New_York").dt.strftime("%Y-%m-%d %H:%M")  # 09:30..15:59, no zone
    minutes.assign(ts=local).drop(columns=["provider", "timeframe", "symbol"]).to_csv(
        tmp_path / "AAPL_1m.csv", index=False
    )
    day = (D(2024, 3, 4), D(2024, 3, 4))
    with pytest.raises(IncompleteRunError) as info:
        historical_backfill(**csv_run(tmp_path, sqlite_url, ["AAPL"], *day, timeframe="1m"))
    (result,) = info.value.summary.results
    assert result.status is LedgerStatus.REJECTED
    assert "ts inside a session of the exchange calendar" in (result.error or "")
    assert result.error is not None and result.error.startswith("300 bad row(s)")  # 09:30-14:29 "UTC" is pre-open
    # read in the file's zone, every bar is inside the session and the day is complete
    in_new_york = {"timezone": "America/New_York"}
    right = historical_backfill(
        **csv_run(tmp_path, sqlite_url, ["AAPL"], *day, timeframe="1m", options=in_new_york, mode="all")
    )
    assert right.ok and right.bars_written == 390


def test_coverage_counts_bars_per_session_not_per_utc_date(sqlite_url: str) -> None:
    from candleflow.checksum import frame_checksum
    from candleflow.model import Chunk
    from warehouse.load import load_chunk
    from warehouse.queries import bars_per_session_of
    from warehouse.schema import ensure_schema

    engine = get_engine(sqlite_url)
    ensure_schema(engine)
    # post-market minutes of Friday 2024-03-08 until 20:00 New York, which is 01:00 UTC on Saturday
    ts = pd.date_range("2024-03-08 21:00", "2024-03-09 00:59", freq="1min", tz="UTC")
    frame = pd.DataFrame(
        {
            "provider": "polygon",
            "symbol": "AAPL",
            "timeframe": "1m",
            "ts": ts,
            "open": 1.0,
            "high": 1.0,
            "low": 1.0,
            "close": 1.0,
            "volume": 1.0,
            "vwap": 1.0,
            "trades": pd.array([1] * len(ts), dtype="Int64"),
        }
    )
    chunk = Chunk("polygon", "AAPL", "1m", pd.Timestamp("2024-03-01", tz="UTC"), pd.Timestamp("2024-04-01", tz="UTC"))
    load_chunk(engine, chunk, frame, checksum=frame_checksum(frame), flow_run_id="r")
    counts = bars_per_session_of(engine, "polygon", ["AAPL"], "1m", chunk.window_start, chunk.window_end).get(
        "AAPL", {}
    )
    assert counts == {D(2024, 3, 8): 240}  # all Friday's: Saturday is no session


def test_a_european_index_follows_its_own_calendar(sqlite_url: str, tmp_path: Path, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    from candleflow.errors import IncompleteRunError
    from candleflow.timeframes import get_timeframe
    from cli import main
    from providers import get_provider
    from providers.base import FetchRequest

    london = (
        get_provider("synthetic", {"calendar": "XLON"})
        .fetch(
            FetchRequest(
                ("FTSE",),
                get_timeframe("1d"),
                pd.Timestamp("2024-01-01", tz="UTC"),
                pd.Timestamp("2024-07-01", tz="UTC"),
            )
        )
        .bars
    )
    pd.DataFrame(
        {
            "Date": london["ts"].dt.strftime("%Y-%m-%d"),
            **{c.title(): london[c] for c in ("open", "high", "low", "close", "volume")},
        }
    ).to_csv(tmp_path / "FTSE.csv", index=False)
    args = dict(provider="csv", symbols=["FTSE"], start=D(2024, 1, 1), end=D(2024, 6, 30), warehouse_url=sqlite_url)
    options = {"directory": str(tmp_path)}
    with pytest.raises(IncompleteRunError) as info:  # read on XNYS: London's sessions on US holidays are no sessions
        historical_backfill(**args, provider_options=options)
    assert "ts inside a session of the exchange calendar" in str(info.value)
    monkeypatch.setenv("CANDLEFLOW_CALENDARS", '{"FTSE": "XLON"}')  # its calendar, from the settings
    mapped = historical_backfill(**args, provider_options=options, mode="all")
    assert mapped.ok and mapped.bars_written == len(london)
    assert historical_backfill(**args, provider_options=options, calendar="XLON").results == []  # the run's
    monkeypatch.chdir(tmp_path)
    gaps = [
        "gaps",
        "--provider",
        "csv",
        "--symbols",
        "FTSE",
        "--start",
        "2024-01-01",
        "--end",
        "2024-06-30",
        "--warehouse",
        sqlite_url,
    ]
    assert main(gaps) == 0  # Good Friday, Easter Monday and the May bank holidays are no gaps on XLON
    assert capsys.readouterr().out.strip() == f"0 session(s) with missing or partial bars out of {len(london)} expected"
    assert main([*gaps, "--calendar", "XNYS"]) == 1  # on New York's calendar, US-only sessions are missing
    assert main([*gaps, "--calendar", "XXXX"]) == 2


def test_futures_follow_a_product_calendar_with_its_maintenance_break() -> None:
    from candleflow.sessions import expected_bars_per_session, schedule, sessions_of
    from candleflow.timeframes import get_timeframe

    day = schedule(D(2024, 3, 7), D(2024, 3, 7), "CME_Equity")
    assert expected_bars_per_session(day, get_timeframe("1h")).tolist() == [23]  # 17:00 to 16:00 Chicago
    ts = pd.Series(pd.to_datetime(["2024-03-06 23:00", "2024-03-07 21:59", "2024-03-07 22:30"], utc=True))
    found = sessions_of(ts, get_timeframe("1m"), "CME_Equity")
    assert found.tolist()[:2] == [pd.Timestamp("2024-03-07")] * 2 and pd.isna(found.iloc[2])  # 22:30: the break


def test_bars_deleted_behind_the_ledgers_back_are_found_and_fetched_again(warehouse_url: str) -> None:
    import sqlalchemy as sa

    args = dict(symbols=["AAPL"], start=D(2024, 1, 1), end=D(2024, 6, 28), warehouse_url=warehouse_url)
    assert historical_backfill(**args).bars_written == 124
    with get_engine(warehouse_url).begin() as conn:
        conn.execute(sa.text("DELETE FROM bars WHERE ts >= :a AND ts < :b"), {"a": "2024-03-01", "b": "2024-03-08"})
    refetch = historical_backfill(**args)  # missing means "not fully covered", not only "absent from the ledger"
    assert len(refetch.results) == 1 and refetch.bars_written == 5
    assert historical_backfill(**args).results == []


def test_restated_bars_are_upserted_and_counted_as_revised(sqlite_url: str, tmp_path: Path) -> None:
    import sqlalchemy as sa

    yahoo_file(tmp_path, "2024-01-01", "2024-04-01")
    args = dict(provider="csv", symbols=["AAPL"], start=D(2024, 1, 1), end=D(2024, 3, 28), warehouse_url=sqlite_url)
    options = {"directory": str(tmp_path)}
    historical_backfill(**args, provider_options=options)
    restated = pd.read_csv(tmp_path / "AAPL.csv")
    restated.loc[10, ["Close", "High"]] = restated.loc[10, "High"] + 1.0  # the vendor corrects one bar
    restated.to_csv(tmp_path / "AAPL.csv", index=False)
    summary = historical_backfill(**args, provider_options=options, mode="all")
    assert summary.ok and summary.revised == 1 and summary.bars_written == 1
    assert "0 unchanged, 1 revised)" in summary.headline()
    with get_engine(sqlite_url).connect() as conn:
        assert conn.execute(sa.text("SELECT revisions FROM ingest_ledger")).scalar_one() == 1
    again = historical_backfill(**args, provider_options=options, mode="all")
    assert again.revised == 0 and again.unchanged == 1


def test_status_as_json(tmp_path: Path, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    import json

    from cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["status", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []
    assert main(["backfill", "--symbols", "AAPL", "--start", "2024-01-01", "--end", "2024-03-28"]) == 0
    capsys.readouterr()
    assert main(["status", "--json"]) == 0
    (series,) = json.loads(capsys.readouterr().out)
    assert series["symbol"] == "AAPL" and series["bars"] == 61 and series["missing"] == 0
    assert series["calendar"] == "XNYS" and series["chunks"]["loaded"] == 1
