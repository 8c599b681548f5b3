"""The ledger's rules: a chunk's ledger row, whether the ledger already holds a chunk exactly, whether a load
restates a final chunk, and a chunk that failed for good. The loaders (warehouse.load, warehouse.batch_load,
warehouse.quarantine) write their ledger rows through these, in the transaction of the bars they describe."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import pandas as pd
import sqlalchemy as sa

from candleflow.model import EVERY_SYMBOL, SETTLED, Chunk, LedgerStatus
from warehouse.dialects import dialect_for
from warehouse.schema import bars, bars_in_window, ingest_ledger
from warehouse.utc import as_utc

LEDGER_UPDATE = (
    "window_end",
    "status",
    "rows",
    "checksum",
    "flow_run_id",
    "updated_at",
    "error",
    "adjustment",
    "source_version",
    "complete_through",
)
MAX_ERROR = 4000
LOAD_UPDATE = (*LEDGER_UPDATE, "revisions")

Target = sa.Engine | sa.Connection  # an engine (a pooled connection per call) or a connection the caller holds


@contextmanager
def transaction(target: Target) -> Iterator[sa.Connection]:
    """One transaction on `target`: a pooled connection of an engine, or a connection a caller keeps for many
    chunks in a row (a batch: no pool checkout and liveness ping per chunk)."""
    if isinstance(target, sa.Engine):
        with target.begin() as conn:
            yield conn
    else:
        with target.begin():
            yield target


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def ledger_row(chunk: Chunk, status: LedgerStatus, **values: object) -> dict[str, object]:
    return {
        "provider": chunk.provider,
        "symbol": chunk.symbol,
        "timeframe": chunk.timeframe,
        "window_start": chunk.window_start.to_pydatetime(),
        "window_end": chunk.window_end.to_pydatetime(),
        "status": str(status),
        "updated_at": utc_now(),
        **values,
    }


def ledger_key(chunk: Chunk) -> list[sa.ColumnElement[bool]]:
    led = ingest_ledger.c
    return [
        led.provider == chunk.provider,
        led.symbol == chunk.symbol,
        led.timeframe == chunk.timeframe,
        led.window_start == chunk.window_start.to_pydatetime(),
    ]


def select_ledger(*columns: str) -> sa.Select[Any]:
    """Ledger rows' keys and the named columns."""
    led = ingest_ledger.c
    return sa.select(led.provider, led.symbol, led.timeframe, led.window_start, *(led[name] for name in columns))


def series_key(chunk: Chunk) -> tuple[str, str, str, pd.Timestamp | None]:
    return (chunk.provider, chunk.symbol, chunk.timeframe, as_utc(chunk.window_start))


def key_params(chunk: Chunk) -> dict[str, object]:
    return {
        "k_provider": chunk.provider,
        "k_symbol": chunk.symbol,
        "k_timeframe": chunk.timeframe,
        "k_window_start": chunk.window_start.to_pydatetime(),
    }


def chunk_bars(chunk: Chunk) -> sa.ColumnElement[bool]:
    return bars_in_window(chunk.provider, chunk.symbol, chunk.timeframe, chunk.window_start, chunk.window_end)


def bars_present_many(conn: sa.Connection, chunks: Sequence[tuple[int, Chunk]]) -> dict[int, int]:
    """Bars in each chunk's window, by the caller's position: one grouped count per window the chunks share
    (a batch's chunks mostly share one), an index range scan per symbol."""
    by_window: dict[tuple[str, str, pd.Timestamp, pd.Timestamp], dict[str, int]] = {}
    for i, chunk in chunks:
        by_window.setdefault((chunk.provider, chunk.timeframe, chunk.window_start, chunk.window_end), {})[
            chunk.symbol
        ] = i
    c = bars.c
    present: dict[int, int] = {}
    for (provider, timeframe, start, end), symbols in by_window.items():
        window = (
            c.provider == provider,
            c.timeframe == timeframe,
            c.ts >= start.to_pydatetime(),
            c.ts < end.to_pydatetime(),
        )
        every = symbols.pop(EVERY_SYMBOL, None)
        if every is not None:  # every ticker's bars of the window (`--symbols ALL`)
            present[every] = int(conn.execute(sa.select(sa.func.count()).where(*window)).scalar_one())
        if not symbols:
            continue
        counted = conn.execute(
            sa.select(c.symbol, sa.func.count())
            .where(dialect_for(conn).in_list(c.symbol, list(symbols)), *window)  # Oracle: 1,000 a list
            .group_by(c.symbol)
        )
        for symbol, count in counted:
            present[symbols[symbol]] = int(count)
    return present


def description(
    adjustment: str | None, source_version: str | None, complete_through: pd.Timestamp | None
) -> dict[str, object]:
    """What the ledger row says about the bars besides their count: their adjustment, the source's version, and
    how far they were final when fetched."""
    return {
        "adjustment": adjustment,
        "source_version": source_version,
        "complete_through": None if complete_through is None else complete_through.to_pydatetime(),
    }


def ledger_entry(conn: sa.Connection, chunk: Chunk, checksum: str) -> sa.Row[Any] | None:
    """The chunk's ledger row, with `present`: the bars its window holds, counted only when the checksum matches
    (an index range scan of the window). One round trip serves both `is_unchanged` and `restatement`."""
    led = ingest_ledger.c
    present = sa.select(sa.func.count()).select_from(bars).where(chunk_bars(chunk)).scalar_subquery()
    return conn.execute(
        sa.select(
            led.window_end,
            led.status,
            led.rows,
            led.checksum,
            led.adjustment,
            led.source_version,
            led.complete_through,
            led.revisions,
            sa.case((led.checksum == checksum, present), else_=sa.null()).label("present"),
        ).where(*ledger_key(chunk))
    ).first()


def is_unchanged(
    conn: sa.Connection,
    chunk: Chunk,
    entry: sa.Row[Any] | None,
    described: Mapping[str, object],
    settled: tuple[str, ...] = SETTLED,
) -> bool:
    """True when the ledger already holds this exact chunk as settled (`loaded` or `empty`; `partial` for a load
    of good rows) and the bars it claims are all there. Same bars from a newer source version (a republished
    file) only update the ledger row's description."""
    if entry is None or entry.present is None or not holds(entry, chunk, entry.present, settled):
        return False
    if description_differs(entry, described):
        conn.execute(sa.update(ingest_ledger).where(*ledger_key(chunk)).values(**described, updated_at=utc_now()))
    return True


def may_hold(entry: sa.Row[Any], chunk: Chunk, settled: tuple[str, ...]) -> bool:
    """The part of `holds` that needs no count of bars: the row records the chunk as settled, over its window."""
    return entry.status in settled and as_utc(entry.window_end) == as_utc(chunk.window_end)


def holds(entry: sa.Row[Any], chunk: Chunk, present: int, settled: tuple[str, ...]) -> bool:
    """The rule both unchanged checks share, for a ledger row whose checksum matched: it records the chunk as
    settled, over the same window, and `present` (the bars its window holds now) are all the bars it claims."""
    # A chunk of every ticker counts its window's bars whatever their ticker, and a ticker fetched on its own may
    # hold bars there too (its own ledger row vouches for them): all it loaded must be there, more may be.
    enough = present >= (entry.rows or 0) if chunk.every else present == entry.rows
    return may_hold(entry, chunk, settled) and enough


def description_differs(entry: sa.Row[Any], described: Mapping[str, object]) -> bool:
    """The ledger row says otherwise of the bars' adjustment, source version or `complete_through`."""
    stored = (entry.adjustment, entry.source_version, as_utc(entry.complete_through))
    return stored != (described["adjustment"], described["source_version"], as_utc(described["complete_through"]))


def restatement(entry: sa.Row[Any] | None, checksum: str) -> tuple[bool, int]:
    """Whether loading bars with `checksum` restates the chunk `entry` records (it was loaded final, whole window
    closed, with other bars), and how many times it was revised before."""
    if entry is None:
        return False, 0
    before = int(entry.revisions or 0)
    through, window_end = as_utc(entry.complete_through), as_utc(entry.window_end)
    final = through is None or window_end is None or through >= window_end
    was_loaded = entry.status in ("loaded", "partial") and entry.checksum is not None
    return was_loaded and final and entry.checksum != checksum, before


def record_failure(engine: Target, chunk: Chunk, error: str, *, flow_run_id: str | None) -> None:
    """Mark a chunk `failed` (an error after retries). Its bars, if any were loaded before, stay as they are.
    A chunk this same flow run already settled (a task that loaded it, then broke on another chunk) keeps its
    outcome: the ledger never says failed about bars that committed."""
    row = ledger_row(chunk, LedgerStatus.FAILED, flow_run_id=flow_run_id, error=error[:MAX_ERROR])
    led = ingest_ledger.c
    with transaction(engine) as conn:
        if flow_run_id is not None:
            settled = conn.execute(
                sa.select(led.status).where(
                    *ledger_key(chunk),
                    led.flow_run_id == flow_run_id,
                    led.status.in_([str(s) for s in LedgerStatus if s.settled]),
                )
            ).first()
            if settled is not None:
                return
        dialect_for(engine).upsert(conn, ingest_ledger, [row], ("status", "flow_run_id", "updated_at", "error"))
