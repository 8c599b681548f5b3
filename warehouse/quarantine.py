"""A chunk that failed validation: its rows in the quarantine (each distinct row once per series, with the
latest reasons), its good rows loaded when asked, and its ledger row, in one transaction."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence

import pandas as pd
import sqlalchemy as sa

from candleflow.model import Chunk, LedgerStatus
from warehouse.dialects import dialect_for
from warehouse.ledger import (
    LEDGER_UPDATE,
    MAX_ERROR,
    Target,
    chunk_bars,
    description,
    is_unchanged,
    ledger_entry,
    ledger_key,
    ledger_row,
    transaction,
    utc_now,
)
from warehouse.load import LoadOutcome
from warehouse.schema import bars, ingest_ledger, quarantine
from warehouse.utc import as_utc_datetime


def reject_chunk(
    engine: Target,
    chunk: Chunk,
    frame: pd.DataFrame,
    bad_rows: Mapping[int, Sequence[str]],
    failed_rules: Sequence[str],
    *,
    flow_run_id: str | None,
    load_good_rows: bool = False,
    checksum: str | None = None,
    adjustment: str | None = None,
    source_version: str | None = None,
    complete_through: pd.Timestamp | None = None,
    explanation: str | None = None,
) -> LoadOutcome:
    """Quarantine a chunk that failed validation, in one transaction.

    By default (`rejected`) every row is quarantined and none is loaded; bars an earlier load stored in the window
    stay, and the ledger counts them. With `load_good_rows` (`partial`) only the bad rows are quarantined and the
    others load, and the window ends holding exactly them (bars the source dropped, or now sends bad, are
    deleted); the chunk is then settled like a loaded one, and a rerun of the same source (same `checksum`)
    writes nothing. The quarantine holds each distinct row once per series, however often it is seen.
    `explanation` (which rows, when, and the ways out) is the ledger row's error; else the rules' names.
    """
    reason = "chunk rejected: " + "; ".join(failed_rules)
    status = LedgerStatus.PARTIAL if load_good_rows else LedgerStatus.REJECTED
    frame = frame.reset_index(drop=True)
    bad_positions = set(bad_rows)
    good = frame.drop(index=sorted(bad_positions)) if load_good_rows else frame.iloc[0:0]
    described = description(adjustment, source_version, complete_through)
    dialect = dialect_for(engine)
    with transaction(engine) as conn:
        entry = ledger_entry(conn, chunk, checksum) if load_good_rows and checksum else None
        if is_unchanged(conn, chunk, entry, described, settled=("partial",)):
            return LoadOutcome(status, rows=len(good), written=0, unchanged=True)
        error = explanation or f"{len(bad_positions)} bad row(s): " + "; ".join(failed_rules)
        row = ledger_row(
            chunk,
            status,
            rows=None,
            checksum=checksum,
            flow_run_id=flow_run_id,
            error=error[:MAX_ERROR],
            **described,
        )
        # The ledger row first: it locks the chunk, so two runs quarantining it at once take turns below.
        dialect.upsert(conn, ingest_ledger, [row], LEDGER_UPDATE)
        written, removed = dialect.write_window(conn, chunk, good) if load_good_rows else (0, 0)
        quarantined = new_quarantine_rows(conn, chunk, frame, bad_rows, reason, flow_run_id, load_good_rows)
        if quarantined:
            conn.execute(sa.insert(quarantine), quarantined)
        present = bars_present(conn, chunk)
        conn.execute(
            sa.update(ingest_ledger)
            .where(*ledger_key(chunk))
            .values(rows=present, error=(error + f"; {len(quarantined)} new row(s) quarantined")[:MAX_ERROR])
        )
    return LoadOutcome(status, rows=present, written=written, removed=removed)


def new_quarantine_rows(
    conn: sa.Connection,
    chunk: Chunk,
    frame: pd.DataFrame,
    bad_rows: Mapping[int, Sequence[str]],
    reason: str,
    flow_run_id: str | None,
    only_bad: bool,
) -> list[dict[str, object]]:
    """The rows to quarantine that the quarantine does not hold yet (by content, per series). Rows it holds
    already take this run's reasons (`failed_expectations`); their `flow_run_id` stays the run that first saw them."""
    q = quarantine.c
    # a chunk of every ticker (`--symbols ALL`) keeps each row under its own ticker
    window = (
        q.provider == chunk.provider,
        *([] if chunk.every else [q.symbol == chunk.symbol]),
        q.timeframe == chunk.timeframe,
        q.window_start == chunk.window_start.to_pydatetime(),
    )
    reasons = sa.select(q.row_hash, q.failed_expectations).where(*window, q.row_hash.is_not(None))
    held: dict[str, str] = {str(h): str(f) for h, f in conn.execute(reasons).tuples()}
    now = utc_now()
    out: list[dict[str, object]] = []
    restated: list[dict[str, object]] = []
    for i, record in enumerate(frame.to_dict("records")):
        if only_bad and i not in bad_rows:
            continue
        data = row_json(record)
        symbol = str(record.get("symbol")) if chunk.every else chunk.symbol
        digest = row_hash(chunk, data, symbol)
        failed = "; ".join(bad_rows[i]) if i in bad_rows else reason
        if digest in held:
            if held[digest] != failed:
                restated.append({"digest": digest, "failed": failed})
                held[digest] = failed
            continue
        held[digest] = failed
        out.append(
            {
                "provider": chunk.provider,
                "symbol": symbol[:32],
                "timeframe": chunk.timeframe,
                "window_start": chunk.window_start.to_pydatetime(),
                "window_end": chunk.window_end.to_pydatetime(),
                "ts": as_utc_datetime(record.get("ts")),
                "row_data": data,
                "row_hash": digest,
                "failed_expectations": failed,
                "flow_run_id": flow_run_id,
                "quarantined_at": now,
            }
        )
    if restated:
        now_failed = sa.update(quarantine).where(*window, q.row_hash == sa.bindparam("digest"))
        conn.execute(now_failed.values(failed_expectations=sa.bindparam("failed")), restated)
    return out


def row_json(record: Mapping[str, object]) -> str:
    def plain(value: object) -> object:
        if isinstance(value, pd.Timestamp):
            return value.isoformat()
        if value is None or (isinstance(value, float) and value != value) or value is pd.NA or value is pd.NaT:
            return None
        return value.item() if hasattr(value, "item") else value

    return json.dumps({k: plain(v) for k, v in record.items()}, default=str)


def row_hash(chunk: Chunk, row_data: str, symbol: str | None = None) -> str:
    """What makes a quarantined row distinct: its series and its content as the provider sent it."""
    key = f"{chunk.provider}|{symbol or chunk.symbol}|{chunk.timeframe}|{row_data}"
    return hashlib.sha256(key.encode()).hexdigest()


def bars_present(conn: sa.Connection, chunk: Chunk) -> int:
    return int(conn.execute(sa.select(sa.func.count()).select_from(bars).where(chunk_bars(chunk))).scalar_one())
