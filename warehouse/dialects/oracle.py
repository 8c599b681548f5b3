"""Oracle (python-oracledb, thin mode by default): array-bound inserts into a staging table, then one MERGE.

- Types (see schema.py): prices and volume are BINARY_DOUBLE, an IEEE double like the float64 the frames carry,
  so a value round-trips bit for bit and compares as fast as a number can (NUMBER would convert every value to
  decimal and back). Timestamps are plain TIMESTAMP holding UTC: Oracle refuses TIMESTAMP WITH TIME ZONE in a
  primary key (ORA-02329), and every session is set to UTC on connect so implicit conversions stay in UTC.
- Bars: `executemany` into the global temporary table `candleflow_bars_stage` (rows vanish at commit), in
  batches of `ARRAY_ROWS` with `setinputsizes` so every batch binds the same types, `batcherrors=True` so a bad
  row is reported with its values rather than as a bare ORA- code; then one MERGE that updates only rows whose
  values changed (DECODE compares NULLs as equal) and inserts the rest; then one DELETE of the window's bars the
  staging table lacks (the source dropped them); then the ledger row. One transaction.
- Limits: identifiers of at most 30 bytes (Oracle before 12.2) are checked here; array DML binds each column
  once per batch, so the 65,535-bind limit never applies to it; IN-lists are capped at 1,000 items
  (ORA-01795), see `IN_LIST_MAX`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.dialects.oracle.base import OracleDialect as OracleBaseDialect
from sqlalchemy.engine import URL

from candleflow.model import BAR_COLUMNS, BAR_KEY, BAR_VALUES, Chunk
from warehouse.dialects import oracle_connect
from warehouse.dialects.base import DialectDefaults, Written, unless_in_url, value_columns

STAGE_TABLE = "candleflow_bars_stage"
ARRAY_ROWS = 10_000  # rows per executemany round trip: ~1 MB of binds, well inside the driver's buffers
MAX_IDENTIFIER = 30  # bytes; 128 from Oracle 12.2 on, 30 before, and we do not know which we talk to
IN_LIST_MAX = 1000  # ORA-01795: maximum number of expressions in a list is 1000


class OracleBatchError(Exception):
    """Rows the database refused during an array insert, each with its values and Oracle's reason."""

    def __init__(self, problems: list[tuple[int, dict[str, Any], str]]) -> None:
        self.problems = problems
        shown = "; ".join(f"row {i} {row}: {reason}" for i, row, reason in problems[:10])
        more = f" (and {len(problems) - 10} more)" if len(problems) > 10 else ""
        super().__init__(f"{len(problems)} bar(s) refused by Oracle: {shown}{more}")


def fit_identifier(name: str, limit: int = MAX_IDENTIFIER) -> str:
    """`name` if it fits Oracle's identifier limit, else a stable shortened form with a hash suffix."""
    if len(name.encode()) <= limit:
        return name
    digest = hashlib.blake2b(name.encode(), digest_size=4).hexdigest()
    return f"{name[: limit - len(digest) - 1]}_{digest}"


def batches(n_rows: int, size: int = ARRAY_ROWS) -> Iterator[slice]:
    """Row slices of at most `size` rows covering 0..n_rows."""
    for start in range(0, n_rows, size):
        yield slice(start, min(start + size, n_rows))


def stage_ddl() -> str:
    """The staging table: the shape of `bars`, per session, emptied at every commit."""
    return (
        f"CREATE GLOBAL TEMPORARY TABLE {STAGE_TABLE} ("
        "provider VARCHAR2(32) NOT NULL, symbol VARCHAR2(32) NOT NULL, timeframe VARCHAR2(8) NOT NULL, "
        "ts TIMESTAMP NOT NULL, open BINARY_DOUBLE, high BINARY_DOUBLE, low BINARY_DOUBLE, close BINARY_DOUBLE, "
        "volume BINARY_DOUBLE, vwap BINARY_DOUBLE, trades NUMBER(19)) ON COMMIT DELETE ROWS"
    )


def insert_stage_sql() -> str:
    binds = ", ".join(f":{i}" for i in range(1, len(BAR_COLUMNS) + 1))
    return f"INSERT INTO {STAGE_TABLE} ({', '.join(BAR_COLUMNS)}) VALUES ({binds})"


def merge_bars_sql() -> str:
    """MERGE the staged bars into `bars`: update changed rows only, insert new ones."""
    on = " AND ".join(f"t.{c} = s.{c}" for c in BAR_KEY)
    sets = ", ".join(f"t.{c} = s.{c}" for c in BAR_VALUES)
    changed = " OR ".join(f"DECODE(t.{c}, s.{c}, 0, 1) = 1" for c in BAR_VALUES)
    cols = ", ".join(BAR_COLUMNS)
    values = ", ".join(f"s.{c}" for c in BAR_COLUMNS)
    return (
        f"MERGE INTO bars t USING {STAGE_TABLE} s ON ({on}) "
        f"WHEN MATCHED THEN UPDATE SET {sets} WHERE {changed} "
        f"WHEN NOT MATCHED THEN INSERT ({cols}) VALUES ({values})"
    )


def delete_absent_statement(chunk: Chunk) -> sa.Delete:
    """DELETE the window's bars that the staged bars lack (the source dropped them), after the MERGE; with an
    empty stage, every bar of the window. Timestamps bind as naive UTC, as stored."""
    target, stage = (sa.table(name, *(sa.column(c) for c in BAR_KEY)) for name in ("bars", STAGE_TABLE))
    staged = sa.exists().where(*(stage.c[c] == target.c[c] for c in BAR_KEY))
    window = (chunk.window_start, chunk.window_end)
    start, end = (sa.bindparam(None, _bound(t.to_pydatetime()), sa.DateTime()) for t in window)
    vouched: list[sa.ColumnElement[bool]] = []
    if chunk.every:  # a bar a ledger row of its ticker's own holds is not the every-ticker chunk's to remove
        led = sa.table("ingest_ledger", *(sa.column(c) for c in (*BAR_KEY[:3], "window_start", "window_end")))
        vouched.append(
            ~sa.exists().where(
                *(led.c[c] == target.c[c] for c in BAR_KEY[:3]),
                led.c.window_start <= target.c.ts,
                led.c.window_end > target.c.ts,
            )
        )
    return sa.delete(target).where(
        target.c.provider == chunk.provider,
        *([] if chunk.every else [target.c.symbol == chunk.symbol]),  # a chunk of every ticker: any ticker's
        target.c.timeframe == chunk.timeframe,
        target.c.ts >= start,
        target.c.ts < end,
        ~staged,
        *vouched,
    )


def bind_rows(chunk: Chunk, frame: pd.DataFrame) -> list[tuple[Any, ...]]:
    """The frame as Oracle binds: naive UTC datetimes, floats with None for NaN, ints with None for NA."""
    n = len(frame)
    ts = frame["ts"].dt.tz_convert("UTC").dt.tz_localize(None).dt.to_pydatetime().tolist()
    symbols = frame["symbol"].astype(str).tolist() if chunk.every else [chunk.symbol] * n
    columns: list[list[Any]] = [[chunk.provider] * n, symbols, [chunk.timeframe] * n, ts]
    columns += value_columns(frame)
    return list(zip(*columns, strict=True))


def input_sizes() -> list[Any]:
    """`setinputsizes` for the staging insert, in column order, so every batch binds the same types."""
    import oracledb

    return [
        32,
        32,
        8,
        oracledb.DB_TYPE_TIMESTAMP,
        *([oracledb.DB_TYPE_BINARY_DOUBLE] * 6),
        oracledb.DB_TYPE_NUMBER,
    ]


def merge_row_sql(table: sa.Table, columns: Sequence[str], update: Sequence[str]) -> sa.TextClause:
    """A one-row upsert as MERGE ... USING (SELECT :binds FROM dual): inserts `columns`, or updates `update`
    where the primary key exists; binds typed by the table's columns."""
    cols = [c.name for c in table.columns if c.name in columns]
    key = [c.name for c in table.primary_key]
    preparer = OracleBaseDialect().identifier_preparer  # type: ignore[no-untyped-call]  # SQLAlchemy's, untyped

    def quote(name: str) -> str:  # as the table defines it (the ledger's "rows" is quoted: ROWS is reserved)
        return str(preparer.format_column(table.c[name]))

    select = ", ".join(f":{c} AS {quote(c)}" for c in cols)
    on = " AND ".join(f"t.{quote(c)} = s.{quote(c)}" for c in key)
    sets = ", ".join(f"t.{quote(c)} = s.{quote(c)}" for c in update)
    names = ", ".join(quote(c) for c in cols)
    values = ", ".join(f"s.{quote(c)}" for c in cols)
    sql = (
        f"MERGE INTO {table.name} t USING (SELECT {select} FROM dual) s ON ({on}) "
        f"WHEN MATCHED THEN UPDATE SET {sets} WHEN NOT MATCHED THEN INSERT ({names}) VALUES ({values})"
    )
    return sa.text(sql).bindparams(*(sa.bindparam(c, type_=table.c[c].type) for c in cols))


def _refused_row(rows: list[tuple[Any, ...]], index: int, reason: str) -> tuple[int, dict[str, Any], str]:
    return index, dict(zip(BAR_COLUMNS, rows[index], strict=True)), reason


def _bound(value: Any) -> Any:
    """A value to bind: an aware datetime as naive UTC (the columns are plain TIMESTAMP holding UTC)."""
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        return value.astimezone(dt.UTC).replace(tzinfo=None)
    return value


class OracleDialect(DialectDefaults):
    name: ClassVar[str] = "oracle"

    def engine_arguments(self, url: URL, connect_timeout: float) -> dict[str, Any]:
        """The wallet and thick-mode settings (oracle_connect), and a bounded connect."""
        arguments = oracle_connect.engine_arguments()
        wanted = {"tcp_connect_timeout": float(connect_timeout)}
        arguments["connect_args"] = {**unless_in_url(url, wanted), **arguments.get("connect_args", {})}
        return arguments

    def configure(self, engine: sa.Engine) -> None:
        oracle_connect.configure(engine)

    def in_list(self, column: sa.ColumnElement[Any], values: Sequence[Any]) -> sa.ColumnElement[bool]:
        """At most IN_LIST_MAX items per list (ORA-01795): several lists joined by OR."""
        wanted = list(values)
        return sa.or_(*(column.in_(wanted[i : i + IN_LIST_MAX]) for i in range(0, len(wanted), IN_LIST_MAX)))

    def explain_connect_error(self, error: BaseException) -> str | None:
        return oracle_connect.explain(error)

    def write_window(self, conn: sa.Connection, chunk: Chunk, frame: pd.DataFrame) -> Written:
        written = self._stage_and_merge(conn, chunk, frame) if len(frame) else 0
        removed = conn.execute(delete_absent_statement(chunk)).rowcount  # an empty stage: the whole window
        return Written(written, max(removed, 0))

    def _stage_and_merge(self, conn: sa.Connection, chunk: Chunk, frame: pd.DataFrame) -> int:
        rows = bind_rows(chunk, frame)
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.setinputsizes(*input_sizes())
            for part in batches(len(rows)):
                cursor.executemany(insert_stage_sql(), rows[part], batcherrors=True)
                refused = cursor.getbatcherrors()
                if refused:
                    raise OracleBatchError([_refused_row(rows, part.start + e.offset, e.message) for e in refused])
            cursor.execute(merge_bars_sql())
            return max(int(cursor.rowcount), 0)
        finally:
            cursor.close()

    def utc_date(self, column: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
        return sa.func.to_char(column, "YYYY-MM-DD")  # stored as UTC TIMESTAMP

    def utc_hour(self, column: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
        return sa.func.to_char(column, "YYYY-MM-DD HH24") + ":00"

    def utc_minute(self, column: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
        return sa.cast(sa.func.to_char(column, "MI"), sa.Integer())

    def upsert(
        self, conn: sa.Connection, table: sa.Table, rows: Sequence[dict[str, Any]], update: Sequence[str]
    ) -> None:
        for row in rows:
            conn.execute(merge_row_sql(table, list(row), update), {k: _bound(v) for k, v in row.items()})

    def create_support_tables(self, conn: sa.Connection) -> None:
        """The staging table, once (Oracle DDL commits by itself, so never inside a load)."""
        exists = conn.exec_driver_sql(
            "SELECT COUNT(*) FROM user_tables WHERE table_name = :1", (STAGE_TABLE.upper(),)
        ).scalar()
        if not exists:
            conn.exec_driver_sql(stage_ddl())
