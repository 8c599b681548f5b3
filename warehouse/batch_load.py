"""Many chunks of a batch at once, where one statement can serve them all: those the ledger already holds
exactly (found together, nothing written) and, where the dialect can, those whose windows hold no bar yet (one
COPY, one commit). Every other chunk goes through warehouse.load one at a time."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import sqlalchemy as sa

from candleflow.model import SETTLED, Chunk, LedgerStatus
from warehouse.dialects import dialect_for
from warehouse.dialects.base import CopiesManyChunks
from warehouse.extend import Extension, extend_rows, stored_checksums
from warehouse.ledger import (
    LOAD_UPDATE,
    bars_present_many,
    description,
    description_differs,
    holds,
    key_params,
    ledger_row,
    may_hold,
    restatement,
    select_ledger,
    series_key,
    utc_now,
)
from warehouse.load import LoadOutcome
from warehouse.schema import ingest_ledger
from warehouse.utc import as_utc


@dataclass(frozen=True)
class ChunkLoad:
    """A validated chunk on its way into the warehouse, with what its ledger row says about its bars."""

    chunk: Chunk
    frame: pd.DataFrame
    checksum: str
    adjustment: str | None = None
    source_version: str | None = None
    complete_through: pd.Timestamp | None = None


def settle_unchanged(conn: sa.Connection, loads: Sequence[ChunkLoad]) -> dict[int, LoadOutcome]:
    """The validated chunks among `loads` that the ledger already holds exactly (the rule of `load_chunk`: settled
    `loaded` or `empty`, same window, same checksum, every bar it claims present), found in one transaction of a
    few queries for the whole batch instead of one transaction each: they write no bars and no ledger row, save
    a changed description (newer source version, later `complete_through`), updated together. Returns their
    outcomes by position in `loads`; the caller loads every other chunk. An update run that finds nothing new
    is mostly this: its chunks (`Chunk.extends`) are held by the row they extend when it already reaches their end,
    its bars are all there, and the bars of their own windows are the ones fetched (read and compared together)."""
    if len(loads) < 2:
        return {}
    led = ingest_ledger.c
    rows = [load.chunk.extended_row() for load in loads]  # an update's chunk is held by the row it extends
    wanted = {series_key(row): i for i, row in enumerate(rows)}
    outcomes: dict[int, LoadOutcome] = {}
    with conn.begin():
        entries = conn.execute(
            select_ledger(
                "window_end", "status", "rows", "checksum", "adjustment", "source_version", "complete_through"
            ).where(
                led.provider.in_({c.provider for c in rows}),
                led.timeframe.in_({c.timeframe for c in rows}),
                dialect_for(conn).in_list(led.symbol, sorted({c.symbol for c in rows})),  # Oracle: 1,000 a list
                led.window_start.in_({c.window_start.to_pydatetime() for c in rows}),
            )
        ).all()
        candidates: dict[int, sa.Row[Any]] = {}
        for entry in entries:
            i = wanted.get((entry.provider, entry.symbol, entry.timeframe, as_utc(entry.window_start)))
            if i is None or not may_hold(entry, rows[i], SETTLED):
                continue  # it cannot hold the chunk (an update's row that must grow): no count of its bars
            if loads[i].chunk.extends is not None or entry.checksum == loads[i].checksum:
                candidates[i] = entry
        present = bars_present_many(conn, [(i, rows[i]) for i in candidates])
        held = {i for i, entry in candidates.items() if holds(entry, rows[i], present.get(i, 0), SETTLED)}
        # an extending chunk is held when the bars of its own window are those it fetched
        extending = [loads[i].chunk for i in held if loads[i].chunk.extends is not None]
        stored = stored_checksums(conn, extending) if extending else {}
        changed: list[dict[str, object]] = []
        for i in sorted(held):
            load, entry = loads[i], candidates[i]
            through = load.complete_through
            if load.chunk.extends is not None:
                if stored.get(load.chunk) != load.checksum:
                    continue
                if entry.complete_through is not None and as_utc(entry.complete_through) < load.chunk.window_start:
                    through = as_utc(entry.complete_through)  # an earlier part of the row stays not final
            described = description(load.adjustment, load.source_version, through)
            if description_differs(entry, described):
                changed.append(
                    {**key_params(rows[i]), **{f"v_{k}": v for k, v in described.items()}, "v_updated_at": utc_now()}
                )
            status = LedgerStatus.LOADED if len(load.frame) else LedgerStatus.EMPTY
            outcomes[i] = LoadOutcome(status, rows=len(load.frame), written=0, unchanged=True)
        if changed:  # one statement, many parameter sets
            conn.execute(
                sa.update(ingest_ledger)
                .where(
                    led.provider == sa.bindparam("k_provider"),
                    led.symbol == sa.bindparam("k_symbol"),
                    led.timeframe == sa.bindparam("k_timeframe"),
                    led.window_start == sa.bindparam("k_window_start"),
                )
                .values(
                    adjustment=sa.bindparam("v_adjustment"),
                    source_version=sa.bindparam("v_source_version"),
                    complete_through=sa.bindparam("v_complete_through"),
                    updated_at=sa.bindparam("v_updated_at"),
                ),
                changed,
            )
    return outcomes


def load_fresh_chunks(
    conn: sa.Connection, loads: Sequence[ChunkLoad], *, flow_run_id: str | None
) -> dict[int, LoadOutcome]:
    """Where the dialect can (PostgreSQL): the chunks among `loads` whose window holds no bar yet, in one
    transaction on the caller's connection: one COPY of all their bars and one upsert of all their ledger rows,
    so each chunk's bars and ledger row still commit together (with the others'), and one commit serves them
    all. Returns their outcomes by position in `loads`; the caller loads every other chunk with `load_chunk`.
    Nothing (an empty dict) when the dialect has no such path, fewer than two chunks qualify, or another writer
    landed one of the windows meanwhile (the transaction rolled back: `load_chunk` handles each then)."""
    dialect = dialect_for(conn)
    if not isinstance(dialect, CopiesManyChunks) or len(loads) < 2:
        return {}
    # a chunk of every ticker (`--symbols ALL`) is a whole file, and an update's chunk extends its series' row: each
    # loads in its own transaction (load_chunk)
    candidates = [
        i for i, load in enumerate(loads) if len(load.frame) and not load.chunk.every and load.chunk.extends is None
    ]
    if len(candidates) < 2:
        return {}
    with conn.begin():
        occupied = dialect.occupied_windows(conn, [loads[i].chunk for i in candidates])
    fresh = [i for i in candidates if loads[i].chunk.key not in occupied]
    if len(fresh) < 2:
        return {}
    try:
        return _load_fresh(conn, dialect, [loads[i] for i in fresh], fresh, flow_run_id)
    except sa.exc.IntegrityError:
        return {}


def _load_fresh(
    conn: sa.Connection,
    dialect: CopiesManyChunks,
    loads: Sequence[ChunkLoad],
    positions: Sequence[int],
    flow_run_id: str | None,
) -> dict[int, LoadOutcome]:
    led = ingest_ledger.c
    keys = [load.chunk.key for load in loads]
    with conn.begin():
        earlier = {
            (row.provider, row.symbol, row.timeframe, pd.Timestamp(row.window_start).tz_convert("UTC")): row
            for row in conn.execute(
                select_ledger("window_end", "status", "checksum", "complete_through", "revisions").where(
                    sa.tuple_(led.provider, led.symbol, led.timeframe, led.window_start).in_(keys)
                )
            )
        }
        dialect.copy_fresh(conn, [(load.chunk, load.frame) for load in loads])
        rows, outcomes = [], {}
        for position, load in zip(positions, loads, strict=True):
            restated, revisions = restatement(earlier.get(load.chunk.key), load.checksum)
            rows.append(
                ledger_row(
                    load.chunk,
                    LedgerStatus.LOADED,
                    rows=len(load.frame),
                    checksum=load.checksum,
                    flow_run_id=flow_run_id,
                    error=None,
                    revisions=revisions + int(restated),
                    **description(load.adjustment, load.source_version, load.complete_through),
                )
            )
            outcomes[position] = LoadOutcome(
                LedgerStatus.LOADED, rows=len(load.frame), written=len(load.frame), revised=restated
            )
        dialect.upsert(conn, ingest_ledger, rows, LOAD_UPDATE)
    return outcomes


def load_extensions(
    conn: sa.Connection, loads: Sequence[ChunkLoad], *, flow_run_id: str | None
) -> dict[int, LoadOutcome]:
    """An update's chunks among `loads` (`Chunk.extends`) in one transaction on the caller's connection: each one's
    bars and its series' extended row as `load_chunk` would write them, in a few statements for all of them
    (`extend_rows`) and one commit. Returns their outcomes
    by position in `loads`; the caller loads every other chunk (and any whose row can no longer be extended) with
    `load_chunk`. Nothing (an empty dict) when fewer than two qualify, or when one of them failed: the
    transaction rolled back, and `load_chunk` loads and reports each then."""
    extending = [i for i, load in enumerate(loads) if load.chunk.extends is not None]
    if len(extending) < 2:
        return {}
    items = [
        Extension(
            loads[i].chunk,
            loads[i].frame,
            loads[i].checksum,
            description(loads[i].adjustment, loads[i].source_version, loads[i].complete_through),
        )
        for i in extending
    ]
    try:
        with conn.begin():
            done = extend_rows(conn, items, flow_run_id=flow_run_id)
    except sa.exc.SQLAlchemyError:
        return {}
    outcomes: dict[int, LoadOutcome] = {}
    for n, extended in done.items():
        load = loads[extending[n]]
        outcomes[extending[n]] = LoadOutcome(
            LedgerStatus.LOADED if len(load.frame) else LedgerStatus.EMPTY,
            rows=len(load.frame),
            written=extended.written,
            unchanged=extended.unchanged,
            revised=extended.revised,
            removed=extended.removed,
        )
    return outcomes
