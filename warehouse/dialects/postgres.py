"""PostgreSQL (psycopg 3): binary COPY, straight into `bars` or through a staging table and ON CONFLICT.

Why two paths: a chunk whose window holds no bar yet cannot conflict, so its rows COPY straight into `bars`
(the fastest keyed load there is). Otherwise rows COPY into a temporary staging table and one
`INSERT ... SELECT ... ON CONFLICT DO UPDATE` merges them, rewriting only rows whose values changed, and one
DELETE removes the window's bars the staging table lacks (the source dropped them). If
another writer lands the same window between the probe and the COPY, the unique violation rolls back to a
savepoint and the staging path runs instead.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, ClassVar

import pandas as pd
import psycopg
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import URL

from candleflow.model import BAR_COLUMNS, BAR_VALUES, Chunk
from warehouse.dialects import pgcopy
from warehouse.dialects.base import (
    NOT_VOUCHED,
    DialectDefaults,
    Written,
    unless_in_url,
    upsert_bars_sql,
    upsert_on_conflict,
)

STAGE = "candleflow_bars_stage"
_STAGE_COLUMNS = ("ts", *BAR_VALUES)
_CREATE_STAGE = (
    f"CREATE TEMPORARY TABLE IF NOT EXISTS {STAGE} (ts timestamptz NOT NULL, open float8, high float8, "
    "low float8, close float8, volume float8, vwap float8, trades int8) ON COMMIT DELETE ROWS"
)
_IN_WINDOW = "provider = %s AND symbol = %s AND timeframe = %s AND ts >= %s AND ts < %s"
# a chunk of every ticker (`--symbols ALL`): the window's bars whatever their ticker (ix_bars_window), staged with it
_IN_ANY_WINDOW = "provider = %s AND timeframe = %s AND ts >= %s AND ts < %s"
STAGE_ANY = "candleflow_bars_stage_any"
_CREATE_STAGE_ANY = (
    f"CREATE TEMPORARY TABLE IF NOT EXISTS {STAGE_ANY} (symbol text NOT NULL, ts timestamptz NOT NULL, open float8, "
    "high float8, low float8, close float8, volume float8, vwap float8, trades int8) ON COMMIT DELETE ROWS"
)


_SCHEMA_LOCK = 0x63616E646C65  # "candle": the advisory lock that serialises schema changes


class PostgresDialect(DialectDefaults):
    name: ClassVar[str] = "postgresql"

    def engine_arguments(self, url: URL, connect_timeout: float) -> dict[str, Any]:
        """A bounded connect, and TCP keepalives that notice a server gone silent mid-run."""
        wanted = {
            "connect_timeout": connect_timeout,
            "keepalives": 1,
            "keepalives_idle": 30,
            "keepalives_interval": 10,
            "keepalives_count": 3,
        }
        return {"connect_args": unless_in_url(url, wanted)}

    @contextmanager
    def schema_lock(self, engine: sa.Engine) -> Iterator[None]:
        """Two runs starting together both find the tables missing and race to create them (a duplicate key on
        pg_type); under this advisory lock the second waits, then finds them."""
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT pg_advisory_lock(:key)"), {"key": _SCHEMA_LOCK})
            conn.commit()
            try:
                yield
            finally:
                conn.execute(sa.text("SELECT pg_advisory_unlock(:key)"), {"key": _SCHEMA_LOCK})
                conn.commit()

    def write_window(self, conn: sa.Connection, chunk: Chunk, frame: pd.DataFrame) -> Written:
        raw: psycopg.Connection = conn.connection.driver_connection  # type: ignore[assignment]
        if chunk.every:
            return self._write_every(raw, chunk, frame)
        window = (chunk.provider, chunk.symbol, chunk.timeframe, chunk.window_start, chunk.window_end)
        try:
            with raw.cursor() as cur:
                if frame.empty:  # the source has no bar in the window any more
                    cur.execute(f"DELETE FROM bars WHERE {_IN_WINDOW}", window)
                    return Written(0, max(cur.rowcount, 0))
                cur.execute(f"SELECT 1 FROM bars WHERE {_IN_WINDOW} LIMIT 1", window)
                if cur.fetchone() is None and self._copy_direct(raw, chunk, frame):
                    return Written(len(frame), 0)  # nothing was there to remove
                return self._copy_and_merge(raw, chunk, frame)
        except psycopg.Error as exc:
            # Raw-connection errors bypass SQLAlchemy: wrap them in its classes (IntegrityError, ...) so callers
            # see the same exceptions from every dialect.
            raise sa.exc.DBAPIError.instance(f"bulk load of {chunk.label()}", None, exc, psycopg.Error) from exc

    def _write_every(self, raw: psycopg.Connection, chunk: Chunk, frame: pd.DataFrame) -> Written:
        """`write_window` for a chunk of every ticker: the same two paths, each row under its own ticker."""
        window = (chunk.provider, chunk.timeframe, chunk.window_start, chunk.window_end)
        try:
            with raw.cursor() as cur:
                if frame.empty:
                    cur.execute(f"DELETE FROM bars WHERE {_IN_ANY_WINDOW} AND {NOT_VOUCHED}", window)
                    return Written(0, max(cur.rowcount, 0))
                cur.execute(f"SELECT 1 FROM bars WHERE {_IN_ANY_WINDOW} LIMIT 1", window)
                payload = pgcopy.encode_tickers(frame, (chunk.provider, chunk.timeframe))
                if cur.fetchone() is None and self._copy_payload(raw, payload):
                    return Written(len(frame), 0)
                cur.execute(_CREATE_STAGE_ANY)
                cur.execute(f"TRUNCATE {STAGE_ANY}")
                values = ", ".join(_STAGE_COLUMNS)
                with cur.copy(f"COPY {STAGE_ANY} (symbol, {values}) FROM STDIN (FORMAT BINARY)") as copy:
                    copy.write(pgcopy.encode_tickers(frame))
                cur.execute(
                    f"INSERT INTO bars ({', '.join(BAR_COLUMNS)}) SELECT %s, symbol, %s, {values} FROM {STAGE_ANY} "
                    f"{upsert_bars_sql()}",
                    (chunk.provider, chunk.timeframe),
                )
                written = cur.rowcount
                cur.execute(  # bars the file dropped, unless a ledger row of their ticker's own holds them
                    f"DELETE FROM bars WHERE {_IN_ANY_WINDOW} AND NOT EXISTS (SELECT 1 FROM {STAGE_ANY} s "
                    f"WHERE s.symbol = bars.symbol AND s.ts = bars.ts) AND {NOT_VOUCHED}",
                    window,
                )
                removed = cur.rowcount
                cur.execute(f"TRUNCATE {STAGE_ANY}")
                return Written(written, removed)
        except psycopg.Error as exc:
            raise sa.exc.DBAPIError.instance(f"bulk load of {chunk.label()}", None, exc, psycopg.Error) from exc

    def _copy_direct(self, raw: psycopg.Connection, chunk: Chunk, frame: pd.DataFrame) -> bool:
        constants = (chunk.provider, chunk.symbol, chunk.timeframe)
        return self._copy_payload(raw, pgcopy.encode(pgcopy.frame_columns(frame, constants), len(frame)))

    def _copy_payload(self, raw: psycopg.Connection, payload: bytes) -> bool:
        """COPY a complete payload straight into `bars` in a savepoint; False when a row was there already."""
        try:
            # raw.transaction() is a savepoint inside the caller's transaction
            with (
                raw.transaction(),
                raw.cursor() as cur,
                cur.copy(f"COPY bars ({', '.join(BAR_COLUMNS)}) FROM STDIN (FORMAT BINARY)") as copy,
            ):
                copy.write(payload)
        except psycopg.errors.UniqueViolation:
            return False
        return True

    def _copy_and_merge(self, raw: psycopg.Connection, chunk: Chunk, frame: pd.DataFrame) -> Written:
        payload = pgcopy.encode(pgcopy.frame_columns(frame), len(frame))
        values = ", ".join(_STAGE_COLUMNS)
        with raw.cursor() as cur:
            cur.execute(_CREATE_STAGE)
            cur.execute(f"TRUNCATE {STAGE}")
            with cur.copy(f"COPY {STAGE} ({values}) FROM STDIN (FORMAT BINARY)") as copy:
                copy.write(payload)
            cur.execute(
                f"INSERT INTO bars ({', '.join(BAR_COLUMNS)}) SELECT %s, %s, %s, {values} FROM {STAGE} "
                f"{upsert_bars_sql()}",
                (chunk.provider, chunk.symbol, chunk.timeframe),
            )
            written = cur.rowcount
            # the window's bars the staged ones lack: the source dropped them (a hashed NOT IN, whatever the
            # temporary table's missing statistics make the planner think of its size)
            cur.execute(
                f"DELETE FROM bars WHERE {_IN_WINDOW} AND ts NOT IN (SELECT ts FROM {STAGE})",
                (chunk.provider, chunk.symbol, chunk.timeframe, chunk.window_start, chunk.window_end),
            )
            removed = cur.rowcount
            cur.execute(f"TRUNCATE {STAGE}")
        return Written(written, removed)

    def occupied_windows(self, conn: sa.Connection, chunks: Sequence[Chunk]) -> set[tuple[Any, ...]]:
        """The keys of the chunks whose window holds any bar already: one query for all of them."""
        if not chunks:
            return set()
        raw: psycopg.Connection = conn.connection.driver_connection  # type: ignore[assignment]
        keys = [(c.provider, c.symbol, c.timeframe, c.window_start, c.window_end) for c in chunks]
        columns = list(zip(*keys, strict=True))
        with raw.cursor() as cur:
            cur.execute(
                "SELECT w.provider, w.symbol, w.timeframe, w.window_start FROM unnest(%s::text[], %s::text[], "
                "%s::text[], %s::timestamptz[], %s::timestamptz[]) AS w(provider, symbol, timeframe, window_start, "
                "window_end) WHERE EXISTS (SELECT 1 FROM bars b WHERE b.provider = w.provider AND b.symbol = "
                "w.symbol AND b.timeframe = w.timeframe AND b.ts >= w.window_start AND b.ts < w.window_end)",
                [list(column) for column in columns],
            )
            return {(p, s, t, pd.Timestamp(ws).tz_convert("UTC")) for p, s, t, ws in cur.fetchall()}

    def copy_fresh(self, conn: sa.Connection, parts: Sequence[tuple[Chunk, pd.DataFrame]]) -> int:
        """The bars of many chunks whose windows hold no bar, in one binary COPY straight into `bars` (inside the
        caller's transaction). A row another writer landed meanwhile raises IntegrityError."""
        raw: psycopg.Connection = conn.connection.driver_connection  # type: ignore[assignment]
        header, trailer = len(pgcopy.HEADER), len(pgcopy.TRAILER)
        try:
            with (
                raw.cursor() as cur,
                cur.copy(f"COPY bars ({', '.join(BAR_COLUMNS)}) FROM STDIN (FORMAT BINARY)") as copy,
            ):
                copy.write(pgcopy.HEADER)
                for chunk, frame in parts:
                    columns = pgcopy.frame_columns(frame, (chunk.provider, chunk.symbol, chunk.timeframe))
                    copy.write(pgcopy.encode(columns, len(frame))[header:-trailer])
                copy.write(pgcopy.TRAILER)
        except psycopg.Error as exc:
            raise sa.exc.DBAPIError.instance("bulk load of many chunks", None, exc, psycopg.Error) from exc
        return sum(len(frame) for _, frame in parts)

    def utc_date(self, column: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
        return sa.cast(sa.func.timezone("UTC", column), sa.Date())  # not the session's TimeZone setting

    def utc_hour(self, column: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
        return sa.func.date_trunc("hour", sa.func.timezone("UTC", column))

    def utc_minute(self, column: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
        return sa.cast(sa.func.date_part("minute", sa.func.timezone("UTC", column)), sa.Integer())  # India: +05:30

    def upsert(
        self, conn: sa.Connection, table: sa.Table, rows: Sequence[dict[str, Any]], update: Sequence[str]
    ) -> None:
        upsert_on_conflict(pg_insert, conn, table, rows, update)

    def create_support_tables(self, conn: sa.Connection) -> None:
        """Nothing beyond the tables in schema.py (staging tables here are per transaction)."""
