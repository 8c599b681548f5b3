"""An update's load that extends its series' ledger row (`Chunk.extends`) instead of adding one: the fetched window's
bars are compared with what the warehouse holds there and written if they differ, and the row the series already
has for the calendar period grows to the window's end. Rows an older candleflow added per series per day inside it
fold into it.

A batch's extending chunks load together in a few statements, whatever their number: one read of their series'
ledger rows, one of the bars their windows hold, one count of the bars their rows hold before their windows, one
upsert of the bars that differ (and one delete of those the source dropped), one upsert of their rows."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import sqlalchemy as sa

from candleflow.checksum import frame_checksum
from candleflow.model import BAR_COLUMNS, BAR_VALUES, SETTLED, Chunk, LedgerStatus
from candleflow.planning import segment_start
from warehouse.dialects import dialect_for
from warehouse.dialects.base import value_columns
from warehouse.ledger import LOAD_UPDATE, bars_present_many, description_differs, ledger_key, ledger_row, utc_now
from warehouse.schema import bars, ingest_ledger
from warehouse.utc import as_utc


class Extended(NamedTuple):
    """What an extending load did: bars written and removed in its window, whether nothing changed, and whether
    bars that were final before changed."""

    written: int
    removed: int
    unchanged: bool
    revised: bool


@dataclass(frozen=True)
class Extension:
    """An update's validated chunk on its way into the row it extends."""

    chunk: Chunk
    frame: pd.DataFrame  # its bars, inside its window, one per ts
    checksum: str
    described: Mapping[str, object]  # ledger.description() of its bars


@dataclass(frozen=True)
class _Plan:
    """What loading one extension does to the ledger, decided from its series' rows as they are now."""

    item: Extension
    key: sa.Row[Any]  # the row it extends
    rows: tuple[sa.Row[Any], ...]  # the series' rows from the key's start to the chunk's end
    cut: pd.Timestamp  # where the row's bars stop being final: changes before it are restatements
    described: dict[str, object]
    rerun: bool  # the row already is the chunk's window and nothing else: its bars may be held as they are


def bars_frame(rows: Sequence[sa.Row[Any]]) -> pd.DataFrame:
    """Stored bars as the canonical frame a provider sends, so `frame_checksum` of the two agrees when their
    bars do."""
    frame = pd.DataFrame([tuple(r) for r in rows], columns=list(BAR_COLUMNS))
    for name in ("provider", "symbol", "timeframe"):
        frame[name] = frame[name].astype(str)
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True) if len(frame) else pd.Series([], dtype="datetime64[ns, UTC]")
    for name in BAR_VALUES:
        frame[name] = pd.to_numeric(frame[name], errors="coerce").astype("float64")
    return frame


def stored_frames(conn: sa.Connection, chunks: Sequence[Chunk]) -> dict[Chunk, pd.DataFrame]:
    """The bars the warehouse holds in each chunk's window, as canonical frames: one read per window the chunks
    share (an update's chunks mostly share one), an index range scan per symbol."""
    by_window: dict[tuple[str, str, pd.Timestamp, pd.Timestamp], dict[str, Chunk]] = {}
    for chunk in chunks:
        key = (chunk.provider, chunk.timeframe, chunk.window_start, chunk.window_end)
        by_window.setdefault(key, {})[chunk.symbol] = chunk
    c = bars.c
    out: dict[Chunk, pd.DataFrame] = {}
    for (provider, timeframe, start, end), symbols in by_window.items():
        rows = conn.execute(
            sa.select(*(c[name] for name in BAR_COLUMNS)).where(
                c.provider == provider,
                dialect_for(conn).in_list(c.symbol, sorted(symbols)),
                c.timeframe == timeframe,
                c.ts >= start.to_pydatetime(),
                c.ts < end.to_pydatetime(),
            )
        ).all()
        frame = bars_frame(rows)
        groups = dict(tuple(frame.groupby("symbol", sort=False))) if len(frame) else {}
        for symbol, chunk in symbols.items():
            out[chunk] = groups.get(symbol, frame.iloc[0:0]).reset_index(drop=True)
    return out


def stored_checksums(conn: sa.Connection, chunks: Sequence[Chunk]) -> dict[Chunk, str]:
    """The checksum of the bars the warehouse holds in each chunk's window (`stored_frames`)."""
    return {chunk: frame_checksum(frame) for chunk, frame in stored_frames(conn, chunks).items()}


def load_extension(
    conn: sa.Connection,
    chunk: Chunk,
    frame: pd.DataFrame,
    *,
    checksum: str,
    described: Mapping[str, object],
    flow_run_id: str | None,
) -> Extended | None:
    """Load one update's chunk into the row it extends, inside the caller's transaction (`extend_rows`):
    what it did, or None when the row can no longer be extended and the caller loads the chunk on its own row."""
    return extend_rows(conn, [Extension(chunk, frame, checksum, described)], flow_run_id=flow_run_id).get(0)


def extend_rows(conn: sa.Connection, items: Sequence[Extension], *, flow_run_id: str | None) -> dict[int, Extended]:
    """Load update chunks into the rows they extend, inside the caller's transaction. Returns what each did by
    position in `items`; one that is missing could no longer be extended (another run changed its series' rows
    since the plan: marked one failed, say), and the caller loads it on its own row.

    Each window's bars are made equal to its frame's, and its row's count is that of the row's whole window after.
    `revised`: bars that were final when the row's earlier loads fetched them differ now. The row's checksum is
    that of the bars this load fetched; its `complete_through` stays where an earlier part of the row stopped being
    final, if that lies before this window. A rerun whose row already is its window and whose bars are the ones
    stored writes nothing but a changed description."""
    ledger = _series_rows(conn, [item.chunk for item in items])
    plans = {}
    for i, item in enumerate(items):
        plan = _plan(item, ledger.get((item.chunk.provider, item.chunk.symbol, item.chunk.timeframe), []))
        if plan is not None:
            plans[i] = plan
    if not plans:
        return {}
    stored = stored_frames(conn, [plan.item.chunk for plan in plans.values()])
    out: dict[int, Extended] = {}
    described_only: list[tuple[Chunk, dict[str, object]]] = []
    writing: dict[int, _Plan] = {}
    for i, plan in plans.items():
        if plan.rerun and frame_checksum(stored[plan.item.chunk]) == plan.item.checksum:
            if description_differs(plan.key, plan.described):
                described_only.append((plan.item.chunk.extended_row(), plan.described))
            out[i] = Extended(written=0, removed=0, unchanged=True, revised=False)
        else:
            writing[i] = plan
    for row_chunk, described in described_only:
        conn.execute(sa.update(ingest_ledger).where(*ledger_key(row_chunk)).values(**described, updated_at=utc_now()))
    if not writing:
        return out
    changes = _differences([(i, plan, stored[plan.item.chunk]) for i, plan in writing.items()])
    dialect = dialect_for(conn)
    if changes.upserts:
        dialect.upsert(conn, bars, changes.upserts, BAR_VALUES)
    if changes.deletes:
        c = bars.c
        conn.execute(
            sa.delete(bars).where(
                c.provider == sa.bindparam("k_provider"),
                c.symbol == sa.bindparam("k_symbol"),
                c.timeframe == sa.bindparam("k_timeframe"),
                c.ts == sa.bindparam("k_ts"),
            ),
            changes.deletes,
        )
    # bars each row holds before its chunk's window (the load left them as they were)
    before = bars_present_many(conn, [(i, _before_window(plan.item.chunk)) for i, plan in writing.items()])
    led = ingest_ledger.c
    rows = []
    for i, plan in writing.items():
        chunk, key = plan.item.chunk, plan.key
        row_chunk = chunk.extended_row()
        folded = [
            r.window_start
            for r in plan.rows
            if r is not key and as_utc(r.window_end) <= chunk.window_end and r.status != LedgerStatus.PARTIAL
        ]
        if folded:  # per-day rows of an older candleflow, and a failed update's own: rare, one statement each
            conn.execute(
                sa.delete(ingest_ledger).where(
                    led.provider == chunk.provider,
                    led.symbol == chunk.symbol,
                    led.timeframe == chunk.timeframe,
                    led.window_start.in_(folded),
                )
            )
        written, removed, restated = changes.written.get(i, 0), changes.removed.get(i, 0), changes.before_cut.get(i)
        revised = bool(restated) and key.status == LedgerStatus.LOADED
        held = before.get(i, 0) + len(plan.item.frame)
        status = LedgerStatus.LOADED if held else LedgerStatus.EMPTY
        rows.append(
            {
                **ledger_row(
                    row_chunk,
                    status,
                    rows=held,
                    checksum=plan.item.checksum,
                    flow_run_id=flow_run_id,
                    error=None,
                    revisions=int(key.revisions or 0) + int(revised),
                ),
                **plan.described,
            }
        )
        out[i] = Extended(written=written, removed=removed, unchanged=False, revised=revised)
    dialect.upsert(conn, ingest_ledger, rows, LOAD_UPDATE)
    return out


def _series_rows(conn: sa.Connection, chunks: Sequence[Chunk]) -> dict[tuple[str, str, str], list[sa.Row[Any]]]:
    """The ledger rows of the chunks' series from the earliest row they extend to their latest end: one read per
    provider and timeframe."""
    led = ingest_ledger.c
    groups: dict[tuple[str, str], list[Chunk]] = {}
    for chunk in chunks:
        groups.setdefault((chunk.provider, chunk.timeframe), []).append(chunk)
    out: dict[tuple[str, str, str], list[sa.Row[Any]]] = {}
    for (provider, timeframe), members in groups.items():
        rows = conn.execute(
            sa.select(
                led.symbol,
                led.window_start,
                led.window_end,
                led.status,
                led.complete_through,
                led.revisions,
                led.adjustment,
                led.source_version,
            ).where(
                led.provider == provider,
                led.timeframe == timeframe,
                dialect_for(conn).in_list(led.symbol, sorted({c.symbol for c in members})),
                led.window_start >= min(c.extended_row().window_start for c in members).to_pydatetime(),
                led.window_start < max(c.window_end for c in members).to_pydatetime(),
            )
        ).all()
        for row in rows:
            out.setdefault((provider, row.symbol, timeframe), []).append(row)
    return out


def _plan(item: Extension, series: Sequence[sa.Row[Any]]) -> _Plan | None:
    """How the chunk extends its row, from its series' rows; None when they no longer allow it: the row it
    extends is gone or not settled, or the settled rows no longer reach the chunk's window from it."""
    chunk = item.chunk
    row_start = chunk.extended_row().window_start
    rows = tuple(r for r in series if row_start <= as_utc(r.window_start) < chunk.window_end)
    spans = [(as_utc(r.window_start), as_utc(r.window_end)) for r in rows if r.status in SETTLED]
    key = next((r for r in rows if as_utc(r.window_start) == row_start), None)
    stretch = segment_start([(a, b) for a, b in spans if a is not None and b is not None], chunk.window_start)
    if (
        key is None
        or key.status not in SETTLED
        or stretch is None
        or stretch[0] != row_start
        or stretch[1] > chunk.window_end
    ):
        return None
    # How far the row's bars were final: each settled row's windows up to its complete_through.
    finals = [_final_end(r) for r in rows if r.status in SETTLED]
    not_final_before = [f for f in finals if f < chunk.window_start]
    through = item.described["complete_through"]
    if not_final_before:  # an earlier part was not final when fetched and this load does not fetch it again
        through = min(not_final_before).to_pydatetime()
    return _Plan(
        item=item,
        key=key,
        rows=rows,
        cut=min(max(max(finals), chunk.window_start), chunk.window_end),
        described={**item.described, "complete_through": through},
        rerun=as_utc(key.window_end) == chunk.window_end and len(rows) == 1,
    )


class _Changes(NamedTuple):
    upserts: list[dict[str, Any]]  # bars new to their window or with other values
    deletes: list[dict[str, Any]]  # bars of a window its frame no longer has
    written: dict[int, int]  # by item: bars upserted
    removed: dict[int, int]  # by item: bars deleted
    before_cut: dict[int, int]  # by item: bars changed, added or deleted before its cut (restated if final)


def _differences(windows: Sequence[tuple[int, _Plan, pd.DataFrame]]) -> _Changes:
    """Where each window's fetched bars differ from its stored ones, all windows at once: the bars to upsert and to
    delete, and how many of each item's changes lie before its plan's cut."""
    fetched = _keyed([(i, plan.item.frame) for i, plan, _ in windows])
    held = _keyed([(i, stored) for i, _, stored in windows])
    both = fetched.merge(held, on=["item", "ts_ns"], how="outer", suffixes=("", "_held"), indicator=True)
    new = np.asarray(both["_merge"] == "left_only")
    gone = np.asarray(both["_merge"] == "right_only")
    differs = np.zeros(len(both), dtype=bool)
    for name in BAR_VALUES:
        a, b = both[name].to_numpy("float64"), both[f"{name}_held"].to_numpy("float64")
        differs |= ~((a == b) | (np.isnan(a) & np.isnan(b)))
    upsert = new | (differs & ~gone)
    cuts = {i: plan.cut.as_unit("ns").value for i, plan, _ in windows}
    early = both["ts_ns"].to_numpy("int64") < both["item"].map(cuts).to_numpy("int64")
    items = {i: plan.item.chunk for i, plan, _ in windows}
    return _Changes(
        upserts=_bar_rows(both.loc[upsert], items, ""),
        deletes=_bar_rows(both.loc[gone], items, "k_"),
        written=_counts(both.loc[upsert, "item"]),
        removed=_counts(both.loc[gone, "item"]),
        before_cut=_counts(both.loc[(upsert | gone) & early, "item"]),
    )


def _keyed(frames: Sequence[tuple[int, pd.DataFrame]]) -> pd.DataFrame:
    """The frames' values in one frame, each row with its item's number and its time as UTC nanoseconds: the keys
    `_differences` joins on. Built from the columns' arrays: a frame per item would cost more than the join."""
    sizes = [len(frame) for _, frame in frames]
    columns: dict[str, np.ndarray] = {"item": np.repeat([i for i, _ in frames], sizes).astype("int64")}
    columns["ts_ns"] = np.concatenate(
        [np.array([], "int64")] + [frame["ts"].array.as_unit("ns").asi8 for _, frame in frames if len(frame)]
    )
    for name in BAR_VALUES:
        columns[name] = np.concatenate(
            [np.array([], "float64")] + [frame[name].to_numpy("float64") for _, frame in frames if len(frame)]
        )
    return pd.DataFrame(columns)


def _counts(items: pd.Series) -> dict[int, int]:
    return {int(k): int(v) for k, v in items.value_counts().items()}


def _bar_rows(part: pd.DataFrame, chunks: Mapping[int, Chunk], prefix: str) -> list[dict[str, Any]]:
    """Rows of `bars` for the driver: the series' key, the time, and (unprefixed, for an upsert) the values; a
    delete's rows hold the key alone, its names prefixed."""
    if part.empty:
        return []
    times = pd.to_datetime(part["ts_ns"].to_numpy("int64"), utc=True).to_pydatetime()
    values = value_columns(part) if not prefix else []
    out = []
    for n, (item, ts) in enumerate(zip(part["item"].to_numpy("int64").tolist(), times, strict=True)):
        chunk = chunks[item]
        row: dict[str, Any] = {
            f"{prefix}provider": chunk.provider,
            f"{prefix}symbol": chunk.symbol,
            f"{prefix}timeframe": chunk.timeframe,
            f"{prefix}ts": ts,
        }
        for name, column in zip(BAR_VALUES, values, strict=False):  # none for a delete
            row[name] = column[n]
        out.append(row)
    return out


def _before_window(chunk: Chunk) -> Chunk:
    """The part of the row a chunk extends that lies before the chunk's window."""
    return replace(chunk.extended_row(), window_end=chunk.window_start)


def _final_end(row: sa.Row[Any]) -> pd.Timestamp:
    end = as_utc(row.window_end)
    through = as_utc(row.complete_through)
    assert end is not None
    return end if through is None else min(end, through)
