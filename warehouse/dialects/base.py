"""What a dialect strategy provides."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any, ClassVar, NamedTuple, Protocol, runtime_checkable

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import URL

from candleflow.model import BAR_KEY, BAR_VALUES, Chunk


def value_columns(frame: pd.DataFrame) -> list[list[Any]]:
    """The frame's value columns (BAR_VALUES order) as Python lists for a driver: NaN and NA become None."""

    def nullable(values: np.ndarray, nulls: np.ndarray) -> list[Any]:
        out = values.tolist()
        for i in np.flatnonzero(nulls):
            out[i] = None
        return list(out)

    columns = []
    for name in ("open", "high", "low", "close", "volume", "vwap"):
        values = frame[name].to_numpy(dtype="float64")
        columns.append(nullable(values, np.isnan(values)))
    trades = frame["trades"]
    columns.append(nullable(trades.fillna(0).to_numpy(dtype="int64"), trades.isna().to_numpy()))
    return columns


class Written(NamedTuple):
    """What writing a chunk's window did: bars inserted or changed, and bars deleted because the source no longer
    has them."""

    written: int
    removed: int


class Dialect(Protocol):
    name: ClassVar[str]

    def write_window(self, conn: sa.Connection, chunk: Chunk, frame: pd.DataFrame) -> Written:
        """Make the chunk's window hold exactly the frame's bars, inside the caller's transaction: upsert them and
        delete the window's other bars (the source dropped them). The frame's bars lie inside the window, one per
        ts (validation saw to it)."""
        ...

    def utc_date(self, column: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
        """SQL for the UTC calendar date of a timestamp column."""
        ...

    def utc_hour(self, column: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
        """SQL for the UTC hour a timestamp falls in ('YYYY-MM-DD HH:00' text or a timestamp)."""
        ...

    def utc_minute(self, column: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
        """SQL for the minute of the UTC hour a timestamp falls in, an integer 0-59."""
        ...

    def upsert(
        self, conn: sa.Connection, table: sa.Table, rows: Sequence[dict[str, Any]], update: Sequence[str]
    ) -> None:
        """Insert `rows`, updating `update` columns where the primary key exists."""
        ...

    def create_support_tables(self, conn: sa.Connection) -> None:
        """Create what the bulk path needs besides the tables in schema.py (idempotent)."""
        ...

    def engine_arguments(self, url: URL, connect_timeout: float) -> dict[str, Any]:
        """create_engine() keyword arguments: driver settings, and a bounded wait for a server that accepts
        connections but never answers (`connect_timeout` seconds), unless the URL sets them itself."""
        ...

    def configure(self, engine: sa.Engine) -> None:
        """Set up each new session of `engine` (SQLite's pragmas and write transactions, Oracle's UTC session)."""
        ...

    def schema_lock(self, engine: sa.Engine) -> AbstractContextManager[None]:
        """Held while the schema is created or changed, so runs starting together take turns."""
        ...

    def in_list(self, column: sa.ColumnElement[Any], values: Sequence[Any]) -> sa.ColumnElement[bool]:
        """`column IN (values)`, within the database's limit on the items of one list."""
        ...

    def checkpoint(self, engine: sa.Engine, *, wait_seconds: float) -> None:
        """Make the database file alone hold every committed row, where that is a thing to do (SQLite)."""
        ...

    def explain_connect_error(self, error: BaseException) -> str | None:
        """What to fix for a driver's connection error it knows, else None."""
        ...


class DialectDefaults:
    """What a dialect does where it has no quirk of its own."""

    def configure(self, engine: sa.Engine) -> None:
        return None

    def schema_lock(self, engine: sa.Engine) -> AbstractContextManager[None]:
        return nullcontext()

    def in_list(self, column: sa.ColumnElement[Any], values: Sequence[Any]) -> sa.ColumnElement[bool]:
        return column.in_(list(values))

    def checkpoint(self, engine: sa.Engine, *, wait_seconds: float) -> None:
        return None

    def explain_connect_error(self, error: BaseException) -> str | None:
        return None


def unless_in_url(url: URL, wanted: dict[str, Any]) -> dict[str, Any]:
    """The connect arguments of `wanted` that the URL's query does not set itself."""
    return {k: v for k, v in wanted.items() if k not in url.query}


@runtime_checkable
class CopiesManyChunks(Dialect, Protocol):
    """A dialect that lands many chunks in one statement when their windows hold no bar yet (PostgreSQL)."""

    def occupied_windows(self, conn: sa.Connection, chunks: Sequence[Chunk]) -> set[tuple[Any, ...]]:
        """The keys of the chunks whose window holds any bar already."""
        ...

    def copy_fresh(self, conn: sa.Connection, parts: Sequence[tuple[Chunk, pd.DataFrame]]) -> int:
        """All their bars into `bars`, inside the caller's transaction; IntegrityError if one is there already."""
        ...


def upsert_on_conflict(
    insert: Callable[[sa.Table], Any],
    conn: sa.Connection,
    table: sa.Table,
    rows: Sequence[dict[str, Any]],
    update: Sequence[str],
) -> None:
    """`INSERT ... ON CONFLICT (primary key) DO UPDATE`, through the dialect's own `insert` construct
    (SQLite's and PostgreSQL's share this API)."""
    stmt = insert(table)
    stmt = stmt.on_conflict_do_update(
        index_elements=[c.name for c in table.primary_key], set_={c: stmt.excluded[c] for c in update}
    )
    conn.execute(stmt, list(rows))


def changed_predicate(target: str, source: str) -> str:
    """SQL that is true when a bar's values differ (NULL-safe), so unchanged rows are not rewritten."""
    cols = ", ".join(f"{target}.{c}" for c in BAR_VALUES)
    new = ", ".join(f"{source}.{c}" for c in BAR_VALUES)
    return f"({cols}) IS DISTINCT FROM ({new})"


# A bar another ledger row vouches for (its ticker's own chunk, loaded from another request of the same provider:
# an OTC ticker fetched alone, which a grouped answer leaves out) is not a chunk of every ticker's to remove. For a
# DELETE FROM bars (unaliased); the same SQL on SQLite and PostgreSQL.
NOT_VOUCHED = (
    "NOT EXISTS (SELECT 1 FROM ingest_ledger l WHERE l.provider = bars.provider AND l.symbol = bars.symbol "
    "AND l.timeframe = bars.timeframe AND l.window_start <= bars.ts AND l.window_end > bars.ts)"
)


def upsert_bars_sql(target: str = "bars", source_columns: str | None = None) -> str:
    """The ON CONFLICT clause shared by SQLite and PostgreSQL (same syntax on both)."""
    sets = ", ".join(f"{c} = excluded.{c}" for c in BAR_VALUES)
    key = ", ".join(BAR_KEY)
    return f"ON CONFLICT ({key}) DO UPDATE SET {sets} WHERE {changed_predicate(target, 'excluded')}"
