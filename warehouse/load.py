"""One validated chunk into the warehouse: its bars and its ledger row in one transaction, or nothing at all."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import sqlalchemy as sa

from candleflow.model import EVERY_SYMBOL, Chunk, LedgerStatus
from warehouse.dialects import dialect_for
from warehouse.extend import load_extension
from warehouse.ledger import (
    LOAD_UPDATE,
    Target,
    description,
    is_unchanged,
    ledger_entry,
    ledger_row,
    restatement,
    transaction,
)
from warehouse.schema import ingest_ledger


@dataclass(frozen=True)
class LoadOutcome:
    status: LedgerStatus
    rows: int  # bars the chunk holds
    written: int  # rows inserted or changed by this load
    unchanged: bool = False
    revised: bool = False  # a chunk that was final before now has different bars: the vendor restated them
    removed: int = 0  # bars of the window the source no longer has, deleted by this load


def load_chunk(
    engine: Target,
    chunk: Chunk,
    frame: pd.DataFrame,
    *,
    checksum: str,
    flow_run_id: str | None,
    adjustment: str | None = None,
    source_version: str | None = None,
    complete_through: pd.Timestamp | None = None,
) -> LoadOutcome:
    """Upsert a validated chunk's bars and its ledger row (`loaded`, or `empty` when there are no bars) in
    one transaction; bars of the window that the frame lacks are deleted (the source dropped them), so the window
    ends equal to the source. A chunk identical to what the ledger holds writes no bars.

    `adjustment` (`adjusted` or `raw`) and `source_version` (e.g. a flat file's ETag) describe the bars in the
    ledger row."""
    dialect = dialect_for(engine)
    status = LedgerStatus.LOADED if len(frame) else LedgerStatus.EMPTY
    described = description(adjustment, source_version, complete_through)
    with transaction(engine) as conn:
        if chunk.extends is not None:  # an update's chunk: the series' row for the period grows to its end
            extended = load_extension(
                conn, chunk, frame, checksum=checksum, described=described, flow_run_id=flow_run_id
            )
            if extended is not None:
                return LoadOutcome(
                    status,
                    rows=len(frame),
                    written=extended.written,
                    unchanged=extended.unchanged,
                    revised=extended.revised,
                    removed=extended.removed,
                )
        entry = ledger_entry(conn, chunk, checksum)
        if is_unchanged(conn, chunk, entry, described):
            return LoadOutcome(status, rows=len(frame), written=0, unchanged=True)
        restated, revisions = restatement(entry, checksum)
        written, removed = dialect.write_window(conn, chunk, frame)
        revised = restated and (written > 0 or removed > 0)
        row = ledger_row(
            chunk,
            status,
            rows=len(frame),
            checksum=checksum,
            flow_run_id=flow_run_id,
            error=None,
            revisions=revisions + int(revised),
            **described,
        )
        dialect.upsert(conn, ingest_ledger, [row], LOAD_UPDATE)
        if chunk.every and len(frame):
            fold_ticker_rows(conn, chunk, frame)
    return LoadOutcome(status, rows=len(frame), written=written, revised=revised, removed=removed)


def fold_ticker_rows(conn: sa.Connection, chunk: Chunk, frame: pd.DataFrame) -> int:
    """Migrate a warehouse's bookkeeping to the chunk of every ticker just loaded: the settled rows of the tickers
    it holds, for windows inside its own (one row per symbol and date, as flat-file runs kept them before), say
    nothing it does not, and go. Rows of tickers it lacks stay: they vouch for bars it did not bring (a ticker
    fetched alone), and failures and rejections stay for what they say. Returns the rows folded."""
    led = ingest_ledger.c
    inside = (
        led.provider == chunk.provider,
        led.timeframe == chunk.timeframe,
        led.symbol != EVERY_SYMBOL,
        led.window_start >= chunk.window_start.to_pydatetime(),
        led.window_end <= chunk.window_end.to_pydatetime(),
        led.status.in_(("loaded", "empty")),
    )
    if conn.execute(sa.select(led.symbol).where(*inside).limit(1)).first() is None:
        return 0  # the common case: a warehouse that never kept such rows (one cheap probe)
    tickers = sorted(set(frame["symbol"].astype(str)))
    result = conn.execute(sa.delete(ingest_ledger).where(*inside, dialect_for(conn).in_list(led.symbol, tickers)))
    return max(int(result.rowcount), 0)
