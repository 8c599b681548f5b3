"""The warehouse tables (names and columns are contracts: see DESIGN.md)."""

from __future__ import annotations

import weakref

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.dialects import oracle

from candleflow.errors import BadInputError
from candleflow.model import EVERY_SYMBOL
from warehouse.dialects import dialect_for

metadata = sa.MetaData()

# Oracle: TIMESTAMP holding UTC (TIMESTAMP WITH TIME ZONE cannot be part of a primary key there, and sa.DateTime
# would be DATE, without fractions of a second); BINARY_DOUBLE for prices (an IEEE double, like the frames').
# See warehouse/dialects/oracle.py.
UTC_TIMESTAMP = sa.DateTime(timezone=True).with_variant(oracle.TIMESTAMP(), "oracle")
PRICE: sa.types.TypeEngine[float] = sa.Double().with_variant(oracle.BINARY_DOUBLE(), "oracle")

_STATUSES = ("loaded", "empty", "partial", "rejected", "failed")


def _series_key(primary_key: bool) -> list[sa.Column[str]]:
    """provider, symbol, timeframe: the series every table is keyed or filtered by."""
    return [
        sa.Column("provider", sa.String(32), primary_key=primary_key, nullable=False),
        sa.Column("symbol", sa.String(32), primary_key=primary_key, nullable=False),
        sa.Column("timeframe", sa.String(8), primary_key=primary_key, nullable=False),
    ]


bars = sa.Table(
    "bars",
    metadata,
    *_series_key(primary_key=True),
    sa.Column("ts", UTC_TIMESTAMP, primary_key=True, comment="bar open time, UTC"),
    sa.Column("open", PRICE, nullable=False),
    sa.Column("high", PRICE, nullable=False),
    sa.Column("low", PRICE, nullable=False),
    sa.Column("close", PRICE, nullable=False),
    sa.Column("volume", PRICE, nullable=False),
    sa.Column("vwap", PRICE, nullable=True),
    sa.Column("trades", sa.BigInteger, nullable=True),
)

ingest_ledger = sa.Table(
    "ingest_ledger",
    metadata,
    *_series_key(primary_key=True),
    sa.Column("window_start", UTC_TIMESTAMP, primary_key=True),
    sa.Column("window_end", UTC_TIMESTAMP, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("rows", sa.BigInteger, nullable=True, quote=True),  # ROWS is reserved in Oracle
    sa.Column("checksum", sa.String(64), nullable=True),
    sa.Column("flow_run_id", sa.String(64), nullable=True),
    sa.Column("updated_at", UTC_TIMESTAMP, nullable=False),
    sa.Column("error", sa.Text, nullable=True),
    # What the bars are, recorded with them: `adjusted` (split/dividend adjusted by the vendor) or `raw`; and the
    # vendor's version of the source they came from (a flat file's ETag), so a republished source is reloaded.
    sa.Column("adjustment", sa.String(16), nullable=True),
    sa.Column("source_version", sa.String(128), nullable=True),
    # Bars before this point were final when the chunk was fetched (every session before it had closed); a chunk
    # whose window reaches past it is fetched again. NULL: the whole window (rows written before it existed).
    sa.Column("complete_through", UTC_TIMESTAMP, nullable=True),
    # How often a refetch found the vendor's final bars changed (restatements); each was upserted.
    sa.Column("revisions", sa.Integer, nullable=True),
    sa.CheckConstraint(f"status IN {_STATUSES!r}", name="ck_ingest_ledger_status"),
)

quarantine = sa.Table(
    "quarantine",
    metadata,
    sa.Column(
        "id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), sa.Identity(), primary_key=True, autoincrement=True
    ),
    *_series_key(primary_key=False),
    sa.Column("window_start", UTC_TIMESTAMP, nullable=False),
    sa.Column("window_end", UTC_TIMESTAMP, nullable=False),
    sa.Column("ts", UTC_TIMESTAMP, nullable=True),
    sa.Column("row_data", sa.Text, nullable=False, comment="the bar as the provider sent it, JSON"),
    sa.Column("row_hash", sa.String(64), nullable=True, comment="sha256 of series and row_data: one copy each"),
    sa.Column("failed_expectations", sa.Text, nullable=False, comment="rules this row broke, or why its chunk was"),
    sa.Column("flow_run_id", sa.String(64), nullable=True),
    sa.Column("quarantined_at", UTC_TIMESTAMP, nullable=False),
)
sa.Index(
    "ix_quarantine_chunk",
    quarantine.c.provider,
    quarantine.c.symbol,
    quarantine.c.timeframe,
    quarantine.c.window_start,
)


# Named universes (candleflow.universes): a list of tickers under a name, refreshed from a vendor's reference data,
# kept in the warehouse so every worker of a pool resolves `universe:NAME` to the same symbols.
universes = sa.Table(
    "universes",
    metadata,
    sa.Column("name", sa.String(48), primary_key=True),
    sa.Column("definition", sa.Text, nullable=False, comment="what it was refreshed from: provider and filters"),
    sa.Column("members", sa.Integer, nullable=False),
    sa.Column("refreshed_at", UTC_TIMESTAMP, nullable=False),
)
universe_members = sa.Table(
    "universe_members",
    metadata,
    sa.Column("universe", sa.String(48), primary_key=True),
    sa.Column("symbol", sa.String(32), primary_key=True),
)


# Symbols a vendor stopped listing, as a freshness check found them (candleflow.freshness): reported once, when
# found, and from then on shown as delisted rather than failing each night.
delistings = sa.Table(
    "delistings",
    metadata,
    sa.Column("provider", sa.String(32), primary_key=True),
    sa.Column("symbol", sa.String(32), primary_key=True),
    sa.Column("delisted_on", UTC_TIMESTAMP, nullable=False, comment="the vendor's delisting date, 00:00 UTC"),
    sa.Column("noticed_at", UTC_TIMESTAMP, nullable=False),
    sa.Column("flow_run_id", sa.String(64), nullable=True),
)

# The end of each run of a flow (not of a partition: its parent's row counts it), so metrics and `doctor` know the
# last completed run of each flow and its stage times after any restart.
run_history = sa.Table(
    "run_history",
    metadata,
    sa.Column("flow_run_id", sa.String(64), primary_key=True),
    sa.Column("flow", sa.String(48), nullable=False),
    sa.Column("run_name", sa.String(200), nullable=True),
    sa.Column("ok", sa.Boolean, nullable=False, comment="every chunk ended loaded or empty"),
    sa.Column("ended_at", UTC_TIMESTAMP, nullable=False),
    sa.Column("seconds", PRICE, nullable=False),
    sa.Column("chunks", sa.Integer, nullable=False),
    sa.Column("bars_written", sa.BigInteger, nullable=False),
    sa.Column("fetch_seconds", PRICE, nullable=False),
    sa.Column("validate_seconds", PRICE, nullable=False),
    sa.Column("load_seconds", PRICE, nullable=False),
)
sa.Index("ix_run_history_flow", run_history.c.flow, run_history.c.ended_at)

# The bars of a window whatever their ticker: a chunk of every ticker (`--symbols ALL`) probes, counts and deletes
# by it, and `gaps`/`status` of a whole market count by date through it. Made by the first run of every ticker
# (`ensure_window_index`), not with the tables: rows loaded series by series land all over it, which took a fresh
# 616,000-bar binary COPY into PostgreSQL from 2.1 s to 4.7-5.5 s here; a run of every ticker appends a session at a
# time at its end.
WINDOW_INDEX = "ix_bars_window"


def ensure_window_index(engine: sa.Engine) -> None:
    """Create `ix_bars_window` (provider, timeframe, ts) on `bars` unless it is there; runs starting together
    take turns (PostgreSQL's schema lock)."""
    if _has_index(engine, WINDOW_INDEX):
        return
    with dialect_for(engine).schema_lock(engine):
        if _has_index(engine, WINDOW_INDEX):
            return
        with engine.begin() as conn:
            conn.exec_driver_sql(f"CREATE INDEX {WINDOW_INDEX} ON bars (provider, timeframe, ts)")


def _has_index(engine: sa.Engine, name: str) -> bool:
    return name in {str(ix["name"]).lower() for ix in sa.inspect(engine).get_indexes(bars.name) if ix.get("name")}


def bars_in_window(
    provider: str, symbol: str, timeframe: str, start: pd.Timestamp, end: pd.Timestamp
) -> sa.ColumnElement[bool]:
    """One series' bars with ts in the half-open window [start, end); every ticker's for EVERY_SYMBOL."""
    c = bars.c
    return sa.and_(
        c.provider == provider,
        *([] if symbol == EVERY_SYMBOL else [c.symbol == symbol]),
        c.timeframe == timeframe,
        c.ts >= start.to_pydatetime(),
        c.ts < end.to_pydatetime(),
    )


# Columns added after the first release; `ensure_schema` adds them to older warehouses.
_ADDED_COLUMNS = {
    ingest_ledger: ("adjustment", "source_version", "complete_through", "revisions"),
    quarantine: ("row_hash",),
}


# engines whose warehouse held every table of candleflow's, each candleflow's, when checked or made so here: a
# process checks (or prepares) a warehouse once, not before each step of each run
_current: weakref.WeakSet[sa.Engine] = weakref.WeakSet()


class ForeignTableError(BadInputError):
    """A table with one of candleflow's names is not candleflow's: loading into it would fail or mislead."""


def check_tables(engine: sa.Engine) -> bool:
    """Refuse a warehouse holding a table of one of candleflow's names that is not candleflow's (other columns,
    another primary key), before anything is created or written: one line naming the table and what differs.
    Columns that later releases added (`_ADDED_COLUMNS`) may be missing: `ensure_schema` adds them. True when
    every table is there."""
    if engine in _current:
        return True
    inspector = sa.inspect(engine)
    present = set(inspector.get_table_names())
    for table in metadata.sorted_tables:
        if table.name in present:
            differences = _differences(inspector, table)
            if differences:
                where = engine.url.render_as_string(hide_password=True)
                raise ForeignTableError(
                    f"warehouse {where}: table {table.name} is not candleflow's ({'; '.join(differences)}): rename or "
                    "drop it, or point --warehouse or CANDLEFLOW_WAREHOUSE_URL at another database"
                )
    complete = all(name in present for name in metadata.tables)
    if complete:
        _current.add(engine)
    return complete


def _differences(inspector: sa.Inspector, table: sa.Table) -> list[str]:
    columns = {c["name"].lower(): c for c in inspector.get_columns(table.name)}
    optional = set(_ADDED_COLUMNS.get(table, ()))
    missing = [c.name for c in table.columns if c.name not in columns and c.name not in optional]
    out = [f"missing column{'s' if len(missing) > 1 else ''} {', '.join(missing)}"] if missing else []
    key = [name.lower() for name in inspector.get_pk_constraint(table.name).get("constrained_columns") or []]
    required = [
        name
        for name, c in columns.items()
        if name not in table.c and name not in key and not c.get("nullable", True) and c.get("default") is None
    ]
    if required:
        out.append(
            f"required column{'s' if len(required) > 1 else ''} candleflow does not write: {', '.join(required)}"
        )
    wanted = [c.name for c in table.primary_key]
    if sorted(key) != sorted(wanted):
        found = f"primary key ({', '.join(key)})" if key else "no primary key"
        out.append(f"{found} where candleflow's is ({', '.join(wanted)})")
    return out


def ensure_schema(engine: sa.Engine) -> None:
    """Create the tables that are missing and bring older warehouses up to date (new columns, the ledger's
    newer statuses); leave existing data alone (idempotent, and safe for runs that start together)."""
    with dialect_for(engine).schema_lock(engine):  # runs starting together take turns (PostgreSQL)
        _ensure_schema(engine)
    _current.add(engine)


def _ensure_schema(engine: sa.Engine) -> None:
    check_tables(engine)  # a foreign table of one of our names: refused before anything is created
    metadata.create_all(engine, checkfirst=True)
    with engine.begin() as conn:
        dialect_for(engine).create_support_tables(conn)
    inspector = sa.inspect(engine)
    preparer = engine.dialect.identifier_preparer
    for table, names in _ADDED_COLUMNS.items():
        present = {c["name"] for c in inspector.get_columns(table.name)}
        missing = [table.c[name] for name in names if name not in present]
        with engine.begin() as conn:
            for column in missing:
                kind = column.type.compile(dialect=engine.dialect)
                conn.execute(
                    sa.text(f"ALTER TABLE {preparer.format_table(table)} ADD {preparer.format_column(column)} {kind}")
                )
    _allow_every_status(engine)


def _allow_every_status(engine: sa.Engine) -> None:
    """Ledgers created before `partial` existed check status against the older list: widen the check."""
    checks = sa.inspect(engine).get_check_constraints(ingest_ledger.name)
    old = [c for c in checks if "status" in str(c.get("sqltext", "")) and "'partial'" not in str(c.get("sqltext"))]
    if not old:
        return
    preparer = engine.dialect.identifier_preparer
    table = preparer.format_table(ingest_ledger)
    allowed = ", ".join(f"'{s}'" for s in _STATUSES)
    if engine.dialect.name == "sqlite":  # SQLite cannot alter a constraint: rebuild the table, in one transaction
        columns = ", ".join(preparer.format_column(c) for c in ingest_ledger.columns)
        with engine.begin() as conn:
            conn.exec_driver_sql(f"ALTER TABLE {table} RENAME TO ingest_ledger_before_partial")
            ingest_ledger.create(conn)
            conn.exec_driver_sql(f"INSERT INTO {table} ({columns}) SELECT {columns} FROM ingest_ledger_before_partial")
            conn.exec_driver_sql("DROP TABLE ingest_ledger_before_partial")
        return
    with engine.begin() as conn:
        for check in old:
            conn.exec_driver_sql(f"ALTER TABLE {table} DROP CONSTRAINT {preparer.quote(str(check['name']))}")
        conn.exec_driver_sql(
            f"ALTER TABLE {table} ADD CONSTRAINT ck_ingest_ledger_status CHECK (status IN ({allowed}))"
        )
