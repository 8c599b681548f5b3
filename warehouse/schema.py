"""The warehouse tables (names and columns are contracts: see DESIGN.md)."""

from __future__ import annotations

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.dialects import oracle

from warehouse.dialects import dialect_for

metadata = sa.MetaData()

# Oracle: TIMESTAMP holding UTC (TIMESTAMP WITH TIME ZONE cannot be part of a primary key there, and sa.DateTime
# would be DATE, without fractions of a second); BINARY_DOUBLE for prices (an IEEE double, like the frames').
# See warehouse/dialects/oracle.py.
UTC_TIMESTAMP = sa.DateTime(timezone=True).with_variant(oracle.TIMESTAMP(), "oracle")
PRICE: sa.types.TypeEngine[float] = sa.Double().with_variant(oracle.BINARY_DOUBLE(), "oracle")

_STATUSES = ("loaded", "empty", "rejected", "failed")


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


def bars_in_window(
    provider: str, symbol: str, timeframe: str, start: pd.Timestamp, end: pd.Timestamp
) -> sa.ColumnElement[bool]:
    """One series' bars with ts in the half-open window [start, end)."""
    c = bars.c
    return sa.and_(
        c.provider == provider,
        c.symbol == symbol,
        c.timeframe == timeframe,
        c.ts >= start.to_pydatetime(),
        c.ts < end.to_pydatetime(),
    )


# Ledger columns added after the first release; `ensure_schema` adds them to older warehouses.
_ADDED_LEDGER_COLUMNS = ("adjustment", "source_version")


def ensure_schema(engine: sa.Engine) -> None:
    """Create the tables that are missing and add ledger columns newer than the warehouse; leave existing data
    alone (idempotent)."""
    metadata.create_all(engine, checkfirst=True)
    with engine.begin() as conn:
        dialect_for(engine).create_support_tables(conn)
    present = {c["name"] for c in sa.inspect(engine).get_columns(ingest_ledger.name)}
    missing = [ingest_ledger.c[name] for name in _ADDED_LEDGER_COLUMNS if name not in present]
    if not missing:
        return
    preparer = engine.dialect.identifier_preparer
    with engine.begin() as conn:
        for column in missing:
            kind = column.type.compile(dialect=engine.dialect)
            conn.execute(
                sa.text(
                    f"ALTER TABLE {preparer.format_table(ingest_ledger)} ADD {preparer.format_column(column)} {kind}"
                )
            )
