"""The fault-injection suite (issue #10): each scenario ends in the same warehouse as a clean run of the same
request (same rows, same values, same ledger statuses), or rejects bad data with its reason and stores none of
it. Every scenario records its outcome; the table is printed at the end of the test run (conftest)."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from candleflow.errors import IncompleteRunError
from candleflow.model import LedgerStatus
from flows.backfill import historical_backfill
from tests.fault_table import record
from tests.providers_support import csv_run
from tests.warehouse_state import assert_same_warehouse, warehouse_state
from warehouse.engine import get_engine

pytestmark = [pytest.mark.flows, pytest.mark.usefixtures("prefect_harness")]
D = dt.date


def test_vendor_faults_through_the_real_client_end_like_a_clean_run(
    sqlite_url: str, reference_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    warehouse_url = sqlite_url  # the faults are the vendor's: one warehouse kind is enough
    from tests.polygon_server import FAULTS, KEY, Chaos, polygon_stand_in

    monkeypatch.setenv("MASSIVE_API_KEY", KEY)
    monkeypatch.setenv("CANDLEFLOW_RETRIES", "8")
    monkeypatch.setenv("CANDLEFLOW_RETRY_BACKOFF_SECONDS", "0.05")
    monkeypatch.setenv("CANDLEFLOW_RETRY_JITTER_FACTOR", "0")
    symbols = ["AAPL", "MSFT", "SPY", "QQQ"]
    with polygon_stand_in(set(symbols), page_size=200) as server:
        args = dict(
            symbols=symbols,
            start=D(2024, 1, 1),
            end=D(2024, 6, 28),
            timeframe="1h",
            provider="polygon",
            provider_options={"base_url": server.url, "timeout_seconds": 0.5},
        )
        server.chaos = Chaos(rate=0.35, seed=11, slow_seconds=1.0)
        faulty = historical_backfill(**args, warehouse_url=warehouse_url)
        seen = dict(server.chaos.seen)
        server.chaos = None
        clean = historical_backfill(**args, warehouse_url=reference_url)
    assert faulty.ok and clean.ok
    assert set(seen) == set(FAULTS), seen  # every kind of fault was met at least once
    assert_same_warehouse(warehouse_url, reference_url)
    record(
        "vendor faults: " + ", ".join(FAULTS) + " (35% of requests, seeded)",
        f"{sum(seen.values())} faults over {len(faulty.results)} chunks; all retried; warehouse equals a clean run",
    )


BAD_DATA = {
    # class -> (symbol, its file's second row (the first is good), the rule that must reject it)
    "NaN price": ("NANP", "2024-01-03,NaN,2,1,1.5,100", "open not null"),
    "null price": ("NULLP", "2024-01-03,,2,1,1.5,100", "open not null"),
    "high < low": ("HILO", "2024-01-03,1.5,1,2,1.5,100", "high >= low"),
    "close above high": ("CLHI", "2024-01-03,1.5,2,1,2.5,100", "high >= close"),
    "negative volume": ("NEGV", "2024-01-03,1.5,2,1,1.5,-100", "volume >= 0"),
    "duplicate timestamp": ("DUPT", "2024-01-02,1.5,2,1,1.5,100", "(symbol, ts) unique"),
    "not a session (a Saturday)": ("SATD", "2024-01-06,1.5,2,1,1.5,100", "ts inside a session"),
    "string in a numeric column": ("STRN", "2024-01-03,1.5,two,1,1.5,100", "high not null"),
}
_GOOD = "2024-01-02,1.5,2,1,1.5,100"


def test_bad_data_is_rejected_with_its_reason_and_never_stored(sqlite_url: str, tmp_path: Path) -> None:
    for symbol, row, _ in BAD_DATA.values():
        (tmp_path / f"{symbol}.csv").write_text(f"Date,Open,High,Low,Close,Volume\n{_GOOD}\n{row}\n")
    with pytest.raises(IncompleteRunError) as info:  # one run, one chunk per class of bad data
        historical_backfill(
            **csv_run(
                tmp_path, sqlite_url, [symbol for symbol, _, _ in BAD_DATA.values()], D(2024, 1, 1), D(2024, 1, 31)
            )
        )
    statuses = {r.chunk.symbol: r.status for r in info.value.summary.results}
    with get_engine(sqlite_url).connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM bars")).scalar_one() == 0
        quarantined = conn.execute(sa.text("SELECT symbol, failed_expectations FROM quarantine")).all()
    for case, (symbol, row, rule) in BAD_DATA.items():
        reasons = [reason for who, reason in quarantined if who == symbol]
        distinct = 1 if row == _GOOD else 2  # the quarantine keeps one copy of a repeated row
        assert statuses[symbol] is LedgerStatus.REJECTED and len(reasons) == distinct, (case, reasons)
        assert any(rule in reason for reason in reasons), (case, reasons)
        record(f"bad data: {case}", f"rejected ({rule}); {distinct} distinct row(s) quarantined, 0 stored")


def test_bad_intraday_data_is_rejected_with_its_reason(sqlite_url: str, tmp_path: Path) -> None:
    cases = {
        "off the timeframe grid": ("2024-03-04 14:30:30", "ts on the timeframe grid"),
        "wrongly zoned (New York times read as UTC)": ("2024-03-04 09:30:00", "ts inside a session"),
    }
    for case, (stamp, rule) in cases.items():
        (tmp_path / "BAD_1m.csv").write_text(f"ts,open,high,low,close,volume\n{stamp},1.5,2,1,1.5,100\n")
        with pytest.raises(IncompleteRunError) as info:
            historical_backfill(
                **csv_run(tmp_path, sqlite_url, ["BAD"], D(2024, 3, 4), D(2024, 3, 4), timeframe="1m", mode="all")
            )
        (result,) = info.value.summary.results
        assert result.status is LedgerStatus.REJECTED and rule in (result.error or ""), result.error
        record(f"bad data: {case}", f"rejected ({rule}); nothing stored")
    with get_engine(sqlite_url).connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM bars")).scalar_one() == 0


def test_an_empty_response_and_a_response_for_the_wrong_symbol(sqlite_url: str, tmp_path: Path) -> None:
    (tmp_path / "NONE.csv").write_text("Date,Open,High,Low,Close,Volume\n")
    (tmp_path / "archive.csv").write_text("Date,Ticker,Open,High,Low,Close,Volume\n2024-01-02,MSFT,1.5,2,1,1.5,100\n")
    empty = historical_backfill(**csv_run(tmp_path, sqlite_url, ["NONE"], D(2024, 1, 1), D(2024, 1, 31)))
    assert empty.ok and [r.status for r in empty.results] == [LedgerStatus.EMPTY]
    record("bad data: empty response", "chunk ends empty, not failed; gaps says 'provider had no bars'")
    with pytest.raises(IncompleteRunError) as info:
        historical_backfill(
            provider="csv",
            symbols=["AAPL"],
            start=D(2024, 1, 1),
            end=D(2024, 1, 31),
            warehouse_url=sqlite_url,
            provider_options={"directory": str(tmp_path), "file": "archive.csv"},
        )
    (result,) = info.value.summary.results
    assert result.status is LedgerStatus.FAILED and "holds tickers MSFT but not AAPL" in (result.error or "")
    with get_engine(sqlite_url).connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM bars")).scalar_one() == 0
    record("bad data: a response for the wrong symbol", "chunk fails naming the tickers found; nothing stored")


def _cli(args: list[str], cwd: Path, **env: str) -> subprocess.Popen[str]:
    """The installed `candleflow` command, on the test session's Prefect server."""
    from prefect.settings import get_current_settings

    api = str(get_current_settings().api.url)
    environment = {**os.environ, "PREFECT_API_URL": api, **env}
    return subprocess.Popen(
        [str(Path(sys.executable).parent / "candleflow"), *args],
        cwd=cwd,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _loaded(url: str) -> int:
    with get_engine(url).connect() as conn:
        try:
            return int(conn.execute(sa.text("SELECT count(*) FROM ingest_ledger WHERE status = 'loaded'")).scalar_one())
        except sa.exc.OperationalError:
            return 0


def test_a_cli_killed_mid_backfill_then_rerun_fetches_only_what_did_not_commit(
    sqlite_url: str, reference_url: str, tmp_path: Path
) -> None:
    warehouse_url = sqlite_url
    args = ["backfill", "--symbols", "AAPL", "--timeframe", "1m", "--start", "2024-01-01"]
    args += ["--end", "2024-12-31", "--warehouse", warehouse_url]
    # a task per monthly chunk (about 8,000 bars each), one at a time: the kill lands between commits
    process = _cli(args, tmp_path, CANDLEFLOW_TASK_WORKERS="1", CANDLEFLOW_BATCH_ROWS="8000")
    deadline = time.monotonic() + 120
    while _loaded(warehouse_url) < 2 and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    committed = _loaded(warehouse_url)
    assert 2 <= committed < 12, "killed mid-run: some of the 12 monthly chunks committed, not all"
    rerun = _cli(args, tmp_path)
    out, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err
    assert f"{12 - committed} chunks run ({12 - committed} loaded" in out and f"{committed} skipped" in out, out
    historical_backfill(
        symbols=["AAPL"], timeframe="1m", start=D(2024, 1, 1), end=D(2024, 12, 31), warehouse_url=reference_url
    )
    assert_same_warehouse(warehouse_url, reference_url)
    record(
        "CLI killed with SIGKILL mid-backfill, then rerun",
        f"{committed} of 12 chunks had committed; the rerun fetched the other {12 - committed}; equals a clean run",
    )


def test_two_overlapping_backfills_at_once_equal_one_clean_run(
    warehouse_url: str, reference_url: str, tmp_path: Path
) -> None:
    symbols = ["AAPL", "MSFT", "SPY"]
    common = ["backfill", "--symbols", ",".join(symbols), "--timeframe", "1d", "--warehouse", warehouse_url]
    first = _cli([*common, "--start", "2020-01-01", "--end", "2023-12-31"], tmp_path)
    second = _cli([*common, "--start", "2021-01-01", "--end", "2024-12-31"], tmp_path)
    outputs = [p.communicate(timeout=300) for p in (first, second)]
    assert (first.returncode, second.returncode) == (0, 0), outputs
    historical_backfill(symbols=symbols, start=D(2020, 1, 1), end=D(2024, 12, 31), warehouse_url=reference_url)
    bars, ledger = warehouse_state(warehouse_url)
    pd.testing.assert_frame_equal(bars, warehouse_state(reference_url)[0], check_dtype=False)
    # each run's ledger rows are its own windows: 2020-2023 and, for the second, 2021-2024, or only 2024 when it
    # planned after the first had committed (a chunk partly held is fetched for its years not held); together they
    # hold the whole range: the clean run's request finds nothing to fetch
    for symbol in symbols:
        rows = sorted((start, status) for (_, s, _, start, status, _) in ledger if s == symbol)
        assert rows in ([("2020-01-01", "loaded"), (second, "loaded")] for second in ("2021-01-01", "2024-01-01"))
    again = historical_backfill(symbols=symbols, start=D(2020, 1, 1), end=D(2024, 12, 31), warehouse_url=warehouse_url)
    assert again.results == [] and again.skipped == 3
    kind = "PostgreSQL" if warehouse_url.startswith("postgresql") else "SQLite"
    record(
        f"two overlapping backfills at once ({kind})",
        "both exit 0, no deadlock; same bars as one clean run, and its request finds nothing to fetch",
    )


@pytest.fixture
def postgres_only(postgres_url: str) -> str:
    return postgres_url


def test_database_connections_killed_during_a_run(
    postgres_only: str, reference_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    url = postgres_only
    stop = threading.Event()
    killed: list[int] = []
    watcher = sa.create_engine(url.split("?")[0], poolclass=sa.pool.NullPool)

    def kill_loaders() -> None:
        with watcher.connect() as conn:
            while not stop.is_set():
                pids = (
                    conn.execute(
                        sa.text(
                            "SELECT pid FROM pg_stat_activity WHERE pid <> pg_backend_pid() "
                            "AND datname = current_database() AND backend_type = 'client backend' "
                            "AND state IN ('active', 'idle in transaction') "
                            "AND (query ILIKE '%bars%' OR query ILIKE '%ingest_ledger%')"
                        )
                    )
                    .scalars()
                    .all()
                )
                for pid in pids[:1]:
                    conn.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
                    killed.append(pid)
                conn.commit()
                stop.wait(0.02 if len(killed) < 4 else 60)

    monkeypatch.setenv("CANDLEFLOW_RETRY_BACKOFF_SECONDS", "0.1")
    # nine monthly minute chunks (74,000 bars), a task each: loads long and many enough for the watcher to meet
    # (a year of hourly bars now loads in well under a second, between two of its looks)
    monkeypatch.setenv("CANDLEFLOW_BATCH_ROWS", "8000")
    thread = threading.Thread(target=kill_loaders, daemon=True)
    args = dict(symbols=["AAPL", "MSFT", "SPY"], timeframe="1m", start=D(2024, 1, 1), end=D(2024, 3, 31))
    try:
        thread.start()
        state = historical_backfill(**args, warehouse_url=url, return_state=True)
    finally:
        stop.set()
    thread.join(timeout=5)
    rerun = historical_backfill(**args, warehouse_url=url)  # completes whatever the first run could not
    historical_backfill(**args, warehouse_url=reference_url)
    assert rerun.ok and killed, "the watcher must have killed a loading connection"
    assert_same_warehouse(url, reference_url)
    outcome = "completed" if state.is_completed() else "failed some chunks with a clear error"
    record(
        "warehouse connections killed during a run (pg_terminate_backend)",
        f"{len(killed)} connections killed; the run {outcome}, nothing half-written; a rerun equals a clean run",
    )
