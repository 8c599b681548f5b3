"""Issue #10: each defect found by loading real files and injecting faults, reproduced first, then kept fixed."""

import datetime as dt
from pathlib import Path

import pandas as pd
import pytest

from candleflow.model import LedgerStatus
from flows.backfill import historical_backfill
from flows.incremental import incremental_update
from tests.providers_support import synthetic_bars
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
        start=D(2012, 1, 1),
        end=D(2015, 12, 31),
        warehouse_url=sqlite_url,
        provider_options=options,
    )
    assert summary.ok and (summary.counts()["loaded"], summary.counts()["empty"]) == (1, 3)
    statuses = {e.window_start.year: e.status for e in read_ledger(get_engine(sqlite_url))}
    assert statuses == {
        2012: LedgerStatus.EMPTY,
        2013: LedgerStatus.EMPTY,
        2014: LedgerStatus.LOADED,
        2015: LedgerStatus.EMPTY,
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
    from candleflow.cli import main

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

    from candleflow.cli import main

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
