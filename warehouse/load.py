"""One validated chunk into the warehouse: its bars and its ledger row in one transaction, or nothing at all."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from candleflow.model import Chunk, LedgerStatus
from warehouse.dialects import dialect_for
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
    return LoadOutcome(status, rows=len(frame), written=written, revised=revised, removed=removed)
