"""SQLite: executemany upsert. The embedded default; one writer at a time (BEGIN IMMEDIATE, see engine.py)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError

from candleflow.model import BAR_COLUMNS, Chunk
from candleflow.settings import warehouse_settings
from warehouse.dialects.base import (
    NOT_VOUCHED,
    DialectDefaults,
    Written,
    upsert_bars_sql,
    upsert_on_conflict,
    value_columns,
)

# SQLAlchemy's own storage format for DateTime on SQLite, so its readers parse what we write.
SQLITE_TS_FORMAT = "%Y-%m-%d %H:%M:%S.%f"
_IN_WINDOW = "provider = ? AND symbol = ? AND timeframe = ? AND ts >= ? AND ts < ?"
_IN_ANY_WINDOW = "provider = ? AND timeframe = ? AND ts >= ? AND ts < ?"  # every ticker's bars of a window


def sqlite_path(url: URL) -> Path | None:
    """The file a SQLite URL names; None for in-memory and `file:` URIs."""
    database = url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database)


class SqliteDialect(DialectDefaults):
    name: ClassVar[str] = "sqlite"

    def engine_arguments(self, url: URL, connect_timeout: float) -> dict[str, Any]:
        return {}  # a file: nothing to wait for but locks, which the busy timeout bounds

    def configure(self, engine: sa.Engine) -> None:
        busy_timeout_seconds = warehouse_settings().busy_timeout_seconds

        @sa.event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            # Let SQLAlchemy's "begin" below emit BEGIN IMMEDIATE: a deferred transaction that later wants to
            # write fails at once with "database is locked" instead of waiting for the busy timeout.
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            # another process's write lock: wait this long, then stop the run saying so (warehouse.errors)
            cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_seconds * 1000)}")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        @sa.event.listens_for(engine, "begin")
        def _on_begin(conn: sa.Connection) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

    def checkpoint(self, engine: sa.Engine, *, wait_seconds: float) -> None:
        """Copy the write-ahead log into the database file, so the file alone holds every committed bar (a copied
        `candleflow.db` without its `-wal` file is otherwise missing them). With `wait_seconds`, waits that long
        for other processes' readers and writers and empties the log file too (TRUNCATE); without, copies what it
        can at once (PASSIVE: the end of a run, beside other runs)."""
        path = sqlite_path(engine.url)
        if path is not None and not path.exists():  # never used (a dry run): connecting would create an empty file
            return
        mode = "TRUNCATE" if wait_seconds > 0 else "PASSIVE"
        with contextlib.suppress(DBAPIError), engine.connect() as conn:
            conn.exec_driver_sql(f"PRAGMA busy_timeout={int(wait_seconds * 1000)}")
            try:
                conn.exec_driver_sql(f"PRAGMA wal_checkpoint({mode})")
            finally:
                conn.exec_driver_sql(f"PRAGMA busy_timeout={int(warehouse_settings().busy_timeout_seconds * 1000)}")

    def write_window(self, conn: sa.Connection, chunk: Chunk, frame: pd.DataFrame) -> Written:
        ts = frame["ts"].dt.tz_convert("UTC").dt.strftime(SQLITE_TS_FORMAT).tolist() if len(frame) else []
        written = self._upsert(conn, chunk, frame, ts) if ts else 0
        return Written(written, self._remove_absent(conn, chunk, frame, ts))

    def _upsert(self, conn: sa.Connection, chunk: Chunk, frame: pd.DataFrame, ts: list[str]) -> int:
        n = len(frame)
        symbols = frame["symbol"].astype(str).tolist() if chunk.every else [chunk.symbol] * n
        columns: list[list[Any]] = [[chunk.provider] * n, symbols, [chunk.timeframe] * n, ts]
        columns += value_columns(frame)
        placeholders = ", ".join("?" for _ in BAR_COLUMNS)
        sql = f"INSERT INTO bars ({', '.join(BAR_COLUMNS)}) VALUES ({placeholders}) {upsert_bars_sql()}"
        result = conn.exec_driver_sql(sql, list(zip(*columns, strict=True)))
        return max(result.rowcount, 0)

    def _remove_absent(self, conn: sa.Connection, chunk: Chunk, frame: pd.DataFrame, ts: list[str]) -> int:
        """Delete the window's bars whose ts is not in `ts`. The window now holds every one of `ts`, so a count
        of its bars (an index range) tells whether there is anything to delete; usually there is not. For a
        chunk of every ticker (`--symbols ALL`): the window's bars of any ticker whose (ticker, ts) the frame
        lacks and no ledger row of that ticker's own holds, found by the window index (ix_bars_window)."""
        span = tuple(t.tz_convert("UTC").strftime(SQLITE_TS_FORMAT) for t in (chunk.window_start, chunk.window_end))
        if chunk.every:
            where, window = _IN_ANY_WINDOW, (chunk.provider, chunk.timeframe, *span)
            keys = [f"{symbol}\x1f{t}" for symbol, t in zip(frame["symbol"].astype(str), ts, strict=True)]
            absent = f"(symbol || char(31) || ts) NOT IN (SELECT value FROM json_each(?)) AND {NOT_VOUCHED}"
        else:
            where, window = _IN_WINDOW, (chunk.provider, chunk.symbol, chunk.timeframe, *span)
            keys, absent = ts, "ts NOT IN (SELECT value FROM json_each(?))"
        held = conn.exec_driver_sql(f"SELECT count(*) FROM bars WHERE {where}", window).scalar_one()
        if held <= len(ts):
            return 0
        result = conn.exec_driver_sql(  # the keys to keep as one JSON array: no limit on bound variables
            f"DELETE FROM bars WHERE {where} AND {absent}", (*window, json.dumps(keys))
        )
        return max(result.rowcount, 0)

    def utc_date(self, column: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
        return sa.func.substr(column, 1, 10)  # stored as 'YYYY-MM-DD HH:MM:SS.ffffff' in UTC

    def utc_hour(self, column: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
        return sa.func.substr(column, 1, 13) + ":00"

    def utc_minute(self, column: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
        return sa.cast(sa.func.substr(column, 15, 2), sa.Integer())

    def upsert(
        self, conn: sa.Connection, table: sa.Table, rows: Sequence[dict[str, Any]], update: Sequence[str]
    ) -> None:
        upsert_on_conflict(sqlite_insert, conn, table, rows, update)

    def create_support_tables(self, conn: sa.Connection) -> None:
        """Nothing beyond the tables in schema.py (staging tables here are per transaction)."""
