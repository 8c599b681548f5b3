"""Trust, second round (issue 17), the warehouse's part: a foreign table is refused before anything is written; a
SQLite file holds its bars without its -wal file; a silent server, a locked file, connections killed for a whole
run and a full disk each end in one line naming the cause and the fix; a missing PostgreSQL database is created
when the user may, else named with its `createdb` command."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa

from candleflow.errors import BadInputError
from cli import main
from tests.conftest import PG_DSN, count
from tests.fault_table import record
from warehouse.engine import check_reachable, get_engine
from warehouse.schema import ensure_schema

D = dt.date
BACKFILL = ["backfill", "--symbols", "AAPL", "--timeframe", "1d", "--start", "2024-01-01", "--end", "2024-03-28"]


def tables(url: str) -> set[str]:
    return set(sa.inspect(get_engine(url)).get_table_names())


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    return lines[0]


# ---- item 11: a table of one of candleflow's names that is not candleflow's ----

_BAR_COLUMNS = (
    "provider VARCHAR(32), symbol VARCHAR(32), timeframe VARCHAR(8), ts TIMESTAMP, open FLOAT, high FLOAT, "
    "low FLOAT, close FLOAT, volume FLOAT, vwap FLOAT, trades BIGINT"
)
FOREIGN = {
    "bars with other columns": (
        "CREATE TABLE bars (id INTEGER PRIMARY KEY, ticker VARCHAR(10), price FLOAT)",
        "table bars is not candleflow's (missing columns provider, symbol, timeframe, ts, open, high, low, close, "
        "volume, vwap, trades; primary key (id) where candleflow's is (provider, symbol, timeframe, ts))",
    ),
    "bars without a primary key": (
        f"CREATE TABLE bars ({_BAR_COLUMNS})",
        "table bars is not candleflow's (no primary key where candleflow's is (provider, symbol, timeframe, ts))",
    ),
    "bars with a required column of its own": (
        f"CREATE TABLE bars ({_BAR_COLUMNS}, source VARCHAR(8) NOT NULL, "
        "PRIMARY KEY (provider, symbol, timeframe, ts))",
        "table bars is not candleflow's (required column candleflow does not write: source)",
    ),
    "a foreign ingest_ledger": (
        "CREATE TABLE ingest_ledger (id INTEGER PRIMARY KEY, note VARCHAR(100))",
        "table ingest_ledger is not candleflow's (missing columns provider, symbol, timeframe, window_start, "
        "window_end, status, rows, checksum, flow_run_id, updated_at, error; primary key (id) where candleflow's "
        "is (provider, symbol, timeframe, window_start))",
    ),
    "a foreign quarantine": (
        "CREATE TABLE quarantine (symbol VARCHAR(10), reason VARCHAR(100))",
        "table quarantine is not candleflow's (missing columns id, provider, timeframe, window_start, window_end, "
        "ts, row_data, failed_expectations, flow_run_id, quarantined_at; no primary key where candleflow's is (id))",
    ),
}


@pytest.mark.parametrize("case", sorted(FOREIGN))
def test_a_foreign_table_is_refused_before_anything_is_written(warehouse_url: str, case: str, capsys) -> None:  # type: ignore[no-untyped-def]
    create, why = FOREIGN[case]
    with get_engine(warehouse_url).begin() as conn:
        conn.exec_driver_sql(create)
    before = tables(warehouse_url)
    assert main([*BACKFILL, "--warehouse", warehouse_url]) == 2
    line = one_line(capsys.readouterr().err)
    assert line.startswith("candleflow: error: warehouse ") and why in line, line
    assert line.endswith("rename or drop it, or point --warehouse or CANDLEFLOW_WAREHOUSE_URL at another database")
    assert tables(warehouse_url) == before  # no other table created, no ledger row written
    kind = "PostgreSQL" if warehouse_url.startswith("postgresql") else "SQLite"
    record(f"foreign table in the warehouse: {case} ({kind})", "exit 2 naming the table and what differs; untouched")


@pytest.mark.flows
@pytest.mark.usefixtures("prefect_harness")
def test_a_run_from_the_ui_refuses_a_foreign_table_before_writing(warehouse_url: str) -> None:
    from flows.backfill import historical_backfill

    with get_engine(warehouse_url).begin() as conn:
        conn.exec_driver_sql(FOREIGN["bars with other columns"][0])
        conn.exec_driver_sql("INSERT INTO bars VALUES (1, 'AAPL', 1.5)")
    with pytest.raises(BadInputError) as info:
        historical_backfill(symbols=["AAPL"], start=D(2024, 1, 1), end=D(2024, 3, 28), warehouse_url=warehouse_url)
    assert "table bars is not candleflow's (missing columns provider" in one_line(str(info.value))
    assert tables(warehouse_url) == {"bars"} and count(warehouse_url, "SELECT count(*) FROM bars") == 1


def test_an_older_candleflow_ledger_is_ours_not_foreign(warehouse_url: str) -> None:
    """Columns later releases added are missing from older warehouses: the next run adds them, not refuses."""
    engine = get_engine(warehouse_url)
    ensure_schema(engine)
    with engine.begin() as conn:
        for column in ("adjustment", "source_version", "complete_through", "revisions"):
            conn.exec_driver_sql(f"ALTER TABLE ingest_ledger DROP COLUMN {column}")
        conn.exec_driver_sql("ALTER TABLE quarantine DROP COLUMN row_hash")
    check_reachable(warehouse_url, writes=True)
    ensure_schema(engine)
    assert {c["name"] for c in sa.inspect(engine).get_columns("ingest_ledger")} >= {"revisions", "adjustment"}


# ---- item 12: a SQLite warehouse's file holds its bars after a clean exit ----


@pytest.mark.flows
@pytest.mark.usefixtures("prefect_harness")
def test_the_sqlite_file_alone_holds_the_bars_after_the_command_ends(tmp_path: Path) -> None:
    from prefect.settings import get_current_settings

    env = {**os.environ, "PREFECT_API_URL": str(get_current_settings().api.url)}
    argv = [str(Path(sys.executable).parent / "candleflow"), *BACKFILL[:2], "AAPL,MSFT", *BACKFILL[3:]]
    done = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    copy = tmp_path / "copy"
    copy.mkdir()
    shutil.copy(tmp_path / "candleflow.db", copy / "candleflow.db")  # the file alone, as people copy it
    with sqlite3.connect(copy / "candleflow.db") as db:
        copied = db.execute("SELECT count(*) FROM bars").fetchone()[0]
        ledger = db.execute("SELECT count(*) FROM ingest_ledger WHERE status = 'loaded'").fetchone()[0]
    assert copied == 2 * 61 and ledger == 2, (copied, ledger)
    record("SQLite warehouse copied without its -wal file after a run", "the copy holds every bar and ledger row")


# ---- item 14: slow or raw errors ----


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP server on 127.0.0.1 that accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join(timeout=5)
        for conn in held:
            conn.close()
        server.close()


@pytest.mark.timeout(120)
def test_a_server_that_never_answers_is_named_with_the_fix(silent_server: int, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("CANDLEFLOW_WAREHOUSE_CONNECT_TIMEOUT_SECONDS", "2")
    url = f"postgresql://candle:hunter2@127.0.0.1:{silent_server}/warehouse"
    assert main([*BACKFILL, "--warehouse", url]) == 2
    line = one_line(capsys.readouterr().err)
    where = f"postgresql+psycopg://candle@127.0.0.1:{silent_server}/warehouse"
    assert line.startswith(f"candleflow: error: cannot reach warehouse {where}: no answer from the database"), line
    assert "CANDLEFLOW_WAREHOUSE_CONNECT_TIMEOUT_SECONDS" in line and line.endswith("CANDLEFLOW_WAREHOUSE_URL")
    assert "hunter2" not in line
    record("warehouse host accepts connections but never answers", "exit 2 after the connect timeout (10 s), one line")


@pytest.fixture
def locked_sqlite(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A candleflow SQLite warehouse another process holds a write transaction on; a busy timeout of 1 s."""
    monkeypatch.setenv("CANDLEFLOW_WAREHOUSE_BUSY_TIMEOUT_SECONDS", "1")
    ensure_schema(get_engine(sqlite_url))
    get_engine(sqlite_url).dispose()
    holder = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"), isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("DELETE FROM quarantine")
    try:
        yield sqlite_url
    finally:
        holder.rollback()
        holder.close()


LOCKED = "the database file is locked by another process (another candleflow run, or a program holding a write"


@pytest.mark.timeout(120)
def test_a_locked_sqlite_file_is_named_at_once(locked_sqlite: str, capsys) -> None:  # type: ignore[no-untyped-def]
    assert main([*BACKFILL, "--warehouse", locked_sqlite]) == 2
    line = one_line(capsys.readouterr().err)
    assert line.startswith(f"candleflow: error: cannot use warehouse {locked_sqlite}: {LOCKED}"), line
    assert "let it finish or close it" in line and "CANDLEFLOW_WAREHOUSE_BUSY_TIMEOUT_SECONDS" in line
    record(
        "SQLite warehouse locked by another process (a held write transaction)",
        "exit 2 after the busy timeout (15 s, CANDLEFLOW_WAREHOUSE_BUSY_TIMEOUT_SECONDS), one line: what to do",
    )


@pytest.mark.timeout(300)
@pytest.mark.flows
@pytest.mark.usefixtures("prefect_harness")
def test_a_run_from_the_ui_on_a_locked_sqlite_file_fails_in_one_line(locked_sqlite: str) -> None:
    from flows.backfill import historical_backfill

    with pytest.raises(BadInputError) as info:  # refused by the run's own input check, nothing retried
        historical_backfill(symbols=["AAPL"], start=D(2024, 1, 1), end=D(2024, 3, 28), warehouse_url=locked_sqlite)
    assert one_line(str(info.value)).startswith(f"cannot use warehouse {locked_sqlite}: {LOCKED}")


@pytest.mark.timeout(300)
@pytest.mark.flows
@pytest.mark.usefixtures("prefect_harness")
def test_connections_killed_for_the_whole_run_end_in_one_line_without_sql(
    postgres_url: str, monkeypatch, capsys
) -> None:  # type: ignore[no-untyped-def]
    """Every connection that writes bars is killed (it waits on a lock the test holds, then is terminated), from
    the first chunk to the last: each chunk fails after its retries, and what the summary and the ledger say is
    one line naming the cause and the fix, never the statement or its parameters."""
    monkeypatch.setenv("CANDLEFLOW_RETRIES", "1")
    monkeypatch.setenv("CANDLEFLOW_RETRY_BACKOFF_SECONDS", "0.1")
    ensure_schema(get_engine(postgres_url))
    watcher = sa.create_engine(postgres_url, poolclass=sa.pool.NullPool)
    stop, killed = threading.Event(), []

    def kill_every_writer() -> None:
        with watcher.connect() as conn:
            conn.exec_driver_sql("LOCK TABLE bars IN SHARE MODE")  # writers of bars wait here, then die
            while not stop.is_set():
                conn.exec_driver_sql("SELECT pg_stat_clear_snapshot()")  # a fresh look within the transaction
                waiting = (
                    conn.exec_driver_sql(
                        "SELECT pid FROM pg_stat_activity WHERE pg_backend_pid() = ANY(pg_blocking_pids(pid))"
                    )
                    .scalars()
                    .all()
                )
                for pid in waiting:
                    conn.exec_driver_sql("SELECT pg_terminate_backend(%s)", (pid,))
                    killed.append(pid)
                stop.wait(0.05)
            conn.rollback()

    thread = threading.Thread(target=kill_every_writer, daemon=True)
    thread.start()
    try:
        code = main(["backfill", "--symbols", "AAPL,MSFT,SPY", "--start", "2023-01-01", "--end", "2023-12-29",
                     "--warehouse", postgres_url])  # fmt: skip
    finally:
        stop.set()
        thread.join(timeout=10)
    out = capsys.readouterr().out
    assert code == 1 and len(killed) >= 2, (code, killed, out)
    problems = [line for line in out.splitlines() if line.startswith("  FAILED")]
    closed = "the database closed the connection ("
    assert len(problems) == 1 and closed in problems[0] and "3 chunks" in problems[0], out
    assert "check that the server is up and that nothing ends candleflow's sessions" in problems[0]
    assert "INSERT" not in out and "COPY" not in out and "[SQL" not in out and "parameters" not in out
    with get_engine(postgres_url).connect() as conn:
        errors = conn.exec_driver_sql("SELECT status, error FROM ingest_ledger").all()
    assert len(errors) == 3 and all(status == "failed" and closed in error for status, error in errors), errors
    assert all("\n" not in error and "COPY" not in error for _, error in errors)
    watcher.dispose()
    record(
        "warehouse connections killed for the whole run (pg_terminate_backend)",
        "every chunk fails after its retries; summary and ledger say in one line why and what to do, no SQL",
    )


@pytest.mark.timeout(300)
@pytest.mark.flows
@pytest.mark.usefixtures("prefect_harness")
def test_a_full_sqlite_disk_stops_the_run_with_one_line(sqlite_url: str, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    """SQLite refuses to grow the file past `max_page_count` pages exactly as it does on a full disk
    (SQLITE_FULL): the run stops at the first chunk that meets it, and says so once."""
    monkeypatch.setenv("CANDLEFLOW_TASK_WORKERS", "1")
    monkeypatch.setenv("CANDLEFLOW_BATCH_ROWS", "8000")  # a task per monthly chunk of minute bars
    engine = get_engine(sqlite_url)
    ensure_schema(engine)
    with engine.connect() as conn:
        pages = conn.exec_driver_sql("PRAGMA page_count").scalar_one()
    engine.dispose()
    full: list[BaseException] = []

    @sa.event.listens_for(engine, "connect")
    def _full_disk(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.execute(f"PRAGMA max_page_count = {pages + 1}")

    @sa.event.listens_for(engine, "handle_error")
    def _count(context: Any) -> None:
        if "full" in str(context.original_exception):
            full.append(context.original_exception)

    argv = ["backfill", "--symbols", "AAPL,MSFT,SPY", "--timeframe", "1m", "--start", "2024-01-01"]
    assert main([*argv, "--end", "2024-04-30", "--warehouse", sqlite_url]) == 1
    out = capsys.readouterr().out
    assert "12 chunks run (0 loaded, 0 empty, 0 rejected, 12 failed" in out, out
    problems = [line for line in out.splitlines() if line.startswith("  FAILED")]
    assert len(problems) == 1, out
    assert problems[0].startswith("  FAILED 12 chunks (synthetic:AAPL:1m:2024-01-01..2024-01-31 .. ")
    assert problems[0].endswith(
        "database or disk is full: free space on the disk holding the database file, then run the same command "
        "again: it fetches only what did not load"
    )
    assert 1 <= len(full) <= 2, full  # the chunks in flight met it; the rest were never tried
    record(
        "SQLite warehouse disk full (max_page_count)",
        "the run stops at the first chunk that meets it; one summary line: disk full, free space, run again",
    )


# ---- item 15: a PostgreSQL warehouse database that does not exist ----


def _database_exists(name: str) -> bool:
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is not None


@pytest.fixture
def fresh_database() -> Iterator[str]:
    """A database name on 127.0.0.1:5432 that does not exist yet; dropped afterwards if a test created it."""
    from tests.conftest import _postgres_or_skip

    _postgres_or_skip()
    name = f"cf_wh_{uuid.uuid4().hex[:10]}"
    try:
        yield name
    finally:
        from warehouse import engine as engines

        for key in [k for k in engines._engines if name in k]:
            engines._engines.pop(key).dispose()
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.mark.postgres
@pytest.mark.flows
@pytest.mark.usefixtures("prefect_harness")
def test_a_missing_postgres_database_is_created_by_the_first_run(fresh_database: str, capsys) -> None:  # type: ignore[no-untyped-def]
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{fresh_database}"
    assert main([*BACKFILL, "--warehouse", url, "--dry-run"]) == 0
    assert "1 to fetch" in capsys.readouterr().out and not _database_exists(fresh_database)  # a plan writes nothing
    assert main([*BACKFILL, "--warehouse", url]) == 0
    captured = capsys.readouterr()
    assert f"candleflow: created the warehouse database {url}" in captured.err
    assert "1 loaded" in captured.out and count(url, "SELECT count(*) FROM bars") == 61
    record("warehouse database does not exist (PostgreSQL)", "created by the first run when the user may; said so")


@pytest.mark.postgres
@pytest.mark.flows
@pytest.mark.usefixtures("prefect_harness")
def test_a_run_from_the_ui_creates_its_missing_database(fresh_database: str) -> None:
    from flows.backfill import historical_backfill

    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{fresh_database}"
    summary = historical_backfill(symbols=["AAPL"], start=D(2024, 1, 1), end=D(2024, 3, 28), warehouse_url=url)
    assert summary.ok and _database_exists(fresh_database) and count(url, "SELECT count(*) FROM bars") == 61


@pytest.mark.postgres
def test_a_missing_database_the_user_may_not_create_is_named_with_createdb(fresh_database: str, capsys) -> None:  # type: ignore[no-untyped-def]
    role = f"cf_nocreate_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN NOCREATEDB")
    try:
        url = f"postgresql://{role}@127.0.0.1:5432/{fresh_database}"
        assert main([*BACKFILL, "--warehouse", url]) == 2
        line = one_line(capsys.readouterr().err)
    finally:
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f"DROP ROLE {role}")
    assert line == (
        f"candleflow: error: warehouse postgresql+psycopg://{role}@127.0.0.1:5432/{fresh_database}: database "
        f'"{fresh_database}" does not exist and user {role} may not create it: create it with '
        f"`createdb -h 127.0.0.1 -p 5432 -U {role} {fresh_database}` (or CREATE DATABASE as an administrator), "
        "or fix --warehouse or CANDLEFLOW_WAREHOUSE_URL"
    )
    assert not _database_exists(fresh_database)


# ---- the one translation of database errors (warehouse/errors.py), on the drivers' own error classes ----


def test_database_errors_become_one_line_classed_by_what_to_do() -> None:
    from warehouse.errors import WarehouseConnectionError, WarehouseError, WarehouseUnusableError, describe, explain

    full = psycopg.errors.DiskFull('could not extend file "base/16384/16397": No space left on device')
    assert isinstance(explain(full), WarehouseUnusableError)
    assert str(explain(full)).startswith("the database server's disk is full (could not extend file")
    killed = psycopg.errors.AdminShutdown("terminating connection due to administrator command")
    assert isinstance(explain(killed), WarehouseConnectionError)
    wrapped = sa.exc.OperationalError("INSERT INTO bars VALUES (%(x)s)", {"x": 1}, killed)
    assert describe(wrapped).startswith("the database closed the connection (terminating connection due to")
    assert "INSERT" not in describe(wrapped) and "\n" not in describe(wrapped)
    refused = psycopg.errors.InsufficientPrivilege("permission denied for table bars")
    assert isinstance(explain(refused), WarehouseUnusableError) and "grant" in str(explain(refused))
    violation = sa.exc.IntegrityError("INSERT ...", {}, psycopg.errors.UniqueViolation("duplicate key\nDETAIL: x"))
    assert type(explain(violation)) is WarehouseError and str(explain(violation)) == "UniqueViolation: duplicate key"
    assert explain(KeyError("volume")) is None and describe(KeyError("volume")) == "KeyError: 'volume'"
