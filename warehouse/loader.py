"""The warehouse's transactional units: each commits a chunk's bars (or quarantined rows) and its ledger row
together, or nothing at all."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pandas as pd
import sqlalchemy as sa

from candleflow.model import Chunk, LedgerStatus
from warehouse.dialects import dialect_for
from warehouse.dialects.base import CopiesManyChunks
from warehouse.schema import bars, bars_in_window, ingest_ledger, quarantine

_LEDGER_UPDATE = (
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
_MAX_ERROR = 4000


_LOAD_UPDATE = (*_LEDGER_UPDATE, "revisions")


@dataclass(frozen=True)
class LoadOutcome:
    status: LedgerStatus
    rows: int  # bars the chunk holds
    written: int  # rows inserted or changed by this load
    unchanged: bool = False
    revised: bool = False  # a chunk that was final before now has different bars: the vendor restated them
    removed: int = 0  # bars of the window the source no longer has, deleted by this load


Target = sa.Engine | sa.Connection  # an engine (a pooled connection per call) or a connection the caller holds


@contextmanager
def _transaction(target: Target) -> Iterator[sa.Connection]:
    """One transaction on `target`: a pooled connection of an engine, or a connection a caller keeps for many
    chunks in a row (a batch: no pool checkout and liveness ping per chunk)."""
    if isinstance(target, sa.Engine):
        with target.begin() as conn:
            yield conn
    else:
        with target.begin():
            yield target


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _ledger_row(chunk: Chunk, status: LedgerStatus, **values: object) -> dict[str, object]:
    return {
        "provider": chunk.provider,
        "symbol": chunk.symbol,
        "timeframe": chunk.timeframe,
        "window_start": chunk.window_start.to_pydatetime(),
        "window_end": chunk.window_end.to_pydatetime(),
        "status": str(status),
        "updated_at": _now(),
        **values,
    }


def _chunk_bars(chunk: Chunk) -> sa.ColumnElement[bool]:
    return bars_in_window(chunk.provider, chunk.symbol, chunk.timeframe, chunk.window_start, chunk.window_end)


def _naive_utc(value: object) -> pd.Timestamp | None:
    """A timestamp as naive UTC, whichever way the database returned it (SQLite: naive; others: aware)."""
    if value is None:
        return None
    ts = pd.Timestamp(value)
    return ts.tz_convert("UTC").tz_localize(None) if ts.tzinfo is not None else ts


def _described(
    adjustment: str | None, source_version: str | None, complete_through: pd.Timestamp | None
) -> dict[str, object]:
    """What the ledger row says about the bars besides their count: their adjustment, the source's version, and
    how far they were final when fetched."""
    return {
        "adjustment": adjustment,
        "source_version": source_version,
        "complete_through": None if complete_through is None else complete_through.to_pydatetime(),
    }


def _ledger_entry(conn: sa.Connection, chunk: Chunk, checksum: str) -> sa.Row[Any] | None:
    """The chunk's ledger row, with `present`: the bars its window holds, counted only when the checksum matches
    (an index range scan of the window). One round trip serves both `_is_unchanged` and `_restatement`."""
    led = ingest_ledger.c
    present = sa.select(sa.func.count()).select_from(bars).where(_chunk_bars(chunk)).scalar_subquery()
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
        ).where(*_ledger_key(chunk))
    ).first()


def _is_unchanged(
    conn: sa.Connection,
    chunk: Chunk,
    entry: sa.Row[Any] | None,
    described: Mapping[str, object],
    settled: tuple[str, ...] = ("loaded", "empty"),
) -> bool:
    """True when the ledger already holds this exact chunk as settled (`loaded` or `empty`; `partial` for a load
    of good rows) and the bars it claims are all there. Same bars from a newer source version (a republished
    file) only update the ledger row's description."""
    if entry is None or entry.present is None or not _holds(entry, chunk, entry.present, settled):
        return False
    if _description_differs(entry, described):
        conn.execute(sa.update(ingest_ledger).where(*_ledger_key(chunk)).values(**described, updated_at=_now()))
    return True


def _holds(entry: sa.Row[Any], chunk: Chunk, present: int, settled: tuple[str, ...]) -> bool:
    """The rule both unchanged checks share, for a ledger row whose checksum matched: it records the chunk as
    settled, over the same window, and `present` (the bars its window holds now) are all the bars it claims."""
    same_window = _naive_utc(entry.window_end) == _naive_utc(chunk.window_end)
    return entry.status in settled and same_window and present == entry.rows


def _description_differs(entry: sa.Row[Any], described: Mapping[str, object]) -> bool:
    """The ledger row says otherwise of the bars' adjustment, source version or `complete_through`."""
    stored = (entry.adjustment, entry.source_version, _naive_utc(entry.complete_through))
    return stored != (described["adjustment"], described["source_version"], _naive_utc(described["complete_through"]))


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
    described = _described(adjustment, source_version, complete_through)
    with _transaction(engine) as conn:
        entry = _ledger_entry(conn, chunk, checksum)
        if _is_unchanged(conn, chunk, entry, described):
            return LoadOutcome(status, rows=len(frame), written=0, unchanged=True)
        restated, revisions = _restatement(entry, checksum)
        written, removed = dialect.write_window(conn, chunk, frame)
        revised = restated and (written > 0 or removed > 0)
        row = _ledger_row(
            chunk,
            status,
            rows=len(frame),
            checksum=checksum,
            flow_run_id=flow_run_id,
            error=None,
            revisions=revisions + int(revised),
            **described,
        )
        dialect.upsert(conn, ingest_ledger, [row], _LOAD_UPDATE)
    return LoadOutcome(status, rows=len(frame), written=written, revised=revised, removed=removed)


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
    is mostly this."""
    if len(loads) < 2:
        return {}
    led = ingest_ledger.c
    wanted = {_key(load.chunk): i for i, load in enumerate(loads)}
    chunks = [load.chunk for load in loads]
    outcomes: dict[int, LoadOutcome] = {}
    with conn.begin():
        entries = conn.execute(
            _select_ledger(
                "window_end", "status", "rows", "checksum", "adjustment", "source_version", "complete_through"
            ).where(
                led.provider.in_({c.provider for c in chunks}),
                led.timeframe.in_({c.timeframe for c in chunks}),
                led.symbol.in_({c.symbol for c in chunks}),
                led.window_start.in_({c.window_start.to_pydatetime() for c in chunks}),
            )
        ).all()
        candidates: dict[int, sa.Row[Any]] = {}
        for entry in entries:
            i = wanted.get((entry.provider, entry.symbol, entry.timeframe, _naive_utc(entry.window_start)))
            if i is not None and entry.checksum == loads[i].checksum:
                candidates[i] = entry
        present = _bars_present_many(conn, [(i, loads[i].chunk) for i in candidates])
        changed: list[dict[str, object]] = []
        for i, entry in candidates.items():
            load = loads[i]
            if not _holds(entry, load.chunk, present.get(i, 0), ("loaded", "empty")):
                continue
            described = _described(load.adjustment, load.source_version, load.complete_through)
            if _description_differs(entry, described):
                changed.append(
                    {**_key_params(load.chunk), **{f"v_{k}": v for k, v in described.items()}, "v_updated_at": _now()}
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


def _select_ledger(*columns: str) -> sa.Select[Any]:
    """Ledger rows' keys and the named columns."""
    led = ingest_ledger.c
    return sa.select(led.provider, led.symbol, led.timeframe, led.window_start, *(led[name] for name in columns))


def _key(chunk: Chunk) -> tuple[str, str, str, pd.Timestamp | None]:
    return (chunk.provider, chunk.symbol, chunk.timeframe, _naive_utc(chunk.window_start))


def _key_params(chunk: Chunk) -> dict[str, object]:
    return {
        "k_provider": chunk.provider,
        "k_symbol": chunk.symbol,
        "k_timeframe": chunk.timeframe,
        "k_window_start": chunk.window_start.to_pydatetime(),
    }


def _bars_present_many(conn: sa.Connection, chunks: Sequence[tuple[int, Chunk]]) -> dict[int, int]:
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
        counted = conn.execute(
            sa.select(c.symbol, sa.func.count())
            .where(
                c.provider == provider,
                c.timeframe == timeframe,
                c.symbol.in_(list(symbols)),
                c.ts >= start.to_pydatetime(),
                c.ts < end.to_pydatetime(),
            )
            .group_by(c.symbol)
        )
        for symbol, count in counted:
            present[symbols[symbol]] = int(count)
    return present


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
    with conn.begin():
        occupied = dialect.occupied_windows(conn, [load.chunk for load in loads])
    fresh = [i for i, load in enumerate(loads) if len(load.frame) and load.chunk.key not in occupied]
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
                _select_ledger("window_end", "status", "checksum", "complete_through", "revisions").where(
                    sa.tuple_(led.provider, led.symbol, led.timeframe, led.window_start).in_(keys)
                )
            )
        }
        dialect.copy_fresh(conn, [(load.chunk, load.frame) for load in loads])
        rows, outcomes = [], {}
        for position, load in zip(positions, loads, strict=True):
            restated, revisions = _restatement(earlier.get(load.chunk.key), load.checksum)
            rows.append(
                _ledger_row(
                    load.chunk,
                    LedgerStatus.LOADED,
                    rows=len(load.frame),
                    checksum=load.checksum,
                    flow_run_id=flow_run_id,
                    error=None,
                    revisions=revisions + int(restated),
                    **_described(load.adjustment, load.source_version, load.complete_through),
                )
            )
            outcomes[position] = LoadOutcome(
                LedgerStatus.LOADED, rows=len(load.frame), written=len(load.frame), revised=restated
            )
        dialect.upsert(conn, ingest_ledger, rows, _LOAD_UPDATE)
    return outcomes


def _restatement(entry: sa.Row[Any] | None, checksum: str) -> tuple[bool, int]:
    """Whether loading bars with `checksum` restates the chunk `entry` records (it was loaded final, whole window
    closed, with other bars), and how many times it was revised before."""
    if entry is None:
        return False, 0
    before = int(entry.revisions or 0)
    through, window_end = _naive_utc(entry.complete_through), _naive_utc(entry.window_end)
    final = through is None or window_end is None or through >= window_end
    was_loaded = entry.status in ("loaded", "partial") and entry.checksum is not None
    return was_loaded and final and entry.checksum != checksum, before


def _row_json(record: Mapping[str, object]) -> str:
    def plain(value: object) -> object:
        if isinstance(value, pd.Timestamp):
            return value.isoformat()
        if value is None or (isinstance(value, float) and value != value) or value is pd.NA or value is pd.NaT:
            return None
        return value.item() if hasattr(value, "item") else value

    return json.dumps({k: plain(v) for k, v in record.items()}, default=str)


def row_hash(chunk: Chunk, row_data: str) -> str:
    """What makes a quarantined row distinct: its series and its content as the provider sent it."""
    key = f"{chunk.provider}|{chunk.symbol}|{chunk.timeframe}|{row_data}"
    return hashlib.sha256(key.encode()).hexdigest()


def _bars_present(conn: sa.Connection, chunk: Chunk) -> int:
    return int(conn.execute(sa.select(sa.func.count()).select_from(bars).where(_chunk_bars(chunk))).scalar_one())


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
    described = _described(adjustment, source_version, complete_through)
    dialect = dialect_for(engine)
    with _transaction(engine) as conn:
        entry = _ledger_entry(conn, chunk, checksum) if load_good_rows and checksum else None
        if _is_unchanged(conn, chunk, entry, described, settled=("partial",)):
            return LoadOutcome(status, rows=len(good), written=0, unchanged=True)
        error = explanation or f"{len(bad_positions)} bad row(s): " + "; ".join(failed_rules)
        row = _ledger_row(
            chunk,
            status,
            rows=None,
            checksum=checksum,
            flow_run_id=flow_run_id,
            error=error[:_MAX_ERROR],
            **described,
        )
        # The ledger row first: it locks the chunk, so two runs quarantining it at once take turns below.
        dialect.upsert(conn, ingest_ledger, [row], _LEDGER_UPDATE)
        written, removed = dialect.write_window(conn, chunk, good) if load_good_rows else (0, 0)
        quarantined = _new_quarantine_rows(conn, chunk, frame, bad_rows, reason, flow_run_id, load_good_rows)
        if quarantined:
            conn.execute(sa.insert(quarantine), quarantined)
        present = _bars_present(conn, chunk)
        conn.execute(
            sa.update(ingest_ledger)
            .where(*_ledger_key(chunk))
            .values(rows=present, error=(error + f"; {len(quarantined)} new row(s) quarantined")[:_MAX_ERROR])
        )
    return LoadOutcome(status, rows=present, written=written, removed=removed)


def _ledger_key(chunk: Chunk) -> list[sa.ColumnElement[bool]]:
    led = ingest_ledger.c
    return [
        led.provider == chunk.provider,
        led.symbol == chunk.symbol,
        led.timeframe == chunk.timeframe,
        led.window_start == chunk.window_start.to_pydatetime(),
    ]


def _new_quarantine_rows(
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
    window = (
        q.provider == chunk.provider,
        q.symbol == chunk.symbol,
        q.timeframe == chunk.timeframe,
        q.window_start == chunk.window_start.to_pydatetime(),
    )
    reasons = sa.select(q.row_hash, q.failed_expectations).where(*window, q.row_hash.is_not(None))
    held: dict[str, str] = {str(h): str(f) for h, f in conn.execute(reasons).tuples()}
    now = _now()
    out: list[dict[str, object]] = []
    restated: list[dict[str, object]] = []
    for i, record in enumerate(frame.to_dict("records")):
        if only_bad and i not in bad_rows:
            continue
        data = _row_json(record)
        digest = row_hash(chunk, data)
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
                "symbol": chunk.symbol,
                "timeframe": chunk.timeframe,
                "window_start": chunk.window_start.to_pydatetime(),
                "window_end": chunk.window_end.to_pydatetime(),
                "ts": _safe_ts(record.get("ts")),
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


def _safe_ts(value: object) -> dt.datetime | None:
    try:
        ts = pd.Timestamp(value)
    except (TypeError, ValueError):
        return None
    if pd.isna(ts):
        return None
    return (ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")).to_pydatetime()


def record_failure(engine: Target, chunk: Chunk, error: str, *, flow_run_id: str | None) -> None:
    """Mark a chunk `failed` (an error after retries). Its bars, if any were loaded before, stay as they are.
    A chunk this same flow run already settled (a task that loaded it, then broke on another chunk) keeps its
    outcome: the ledger never says failed about bars that committed."""
    row = _ledger_row(chunk, LedgerStatus.FAILED, flow_run_id=flow_run_id, error=error[:_MAX_ERROR])
    led = ingest_ledger.c
    with _transaction(engine) as conn:
        if flow_run_id is not None:
            settled = conn.execute(
                sa.select(led.status).where(
                    *_ledger_key(chunk),
                    led.flow_run_id == flow_run_id,
                    led.status.in_([str(s) for s in LedgerStatus if s.settled]),
                )
            ).first()
            if settled is not None:
                return
        dialect_for(engine).upsert(conn, ingest_ledger, [row], ("status", "flow_run_id", "updated_at", "error"))


__all__ = ["ChunkLoad", "LoadOutcome", "load_chunk", "load_fresh_chunks", "record_failure", "reject_chunk"]
