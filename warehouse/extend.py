"""An update's load that extends its series' ledger row (`Chunk.extends`) instead of adding one: the fetched window's
bars are compared with what the warehouse holds there and written if they differ, and the row the series already
has for the calendar period grows to the window's end. Rows an older candleflow added per series per day inside it
fold into it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import sqlalchemy as sa

from candleflow.checksum import frame_checksum
from candleflow.model import BAR_COLUMNS, BAR_VALUES, Chunk, LedgerStatus
from candleflow.planning import EXTENDABLE, segment_start
from warehouse.dialects import dialect_for
from warehouse.ledger import LOAD_UPDATE, chunk_bars, description_differs, ledger_key, ledger_row, utc_now
from warehouse.schema import bars, ingest_ledger
from warehouse.utc import as_utc


class Extended(NamedTuple):
    """What an extending load did: bars written and removed in its window, whether nothing changed, and whether
    bars that were final before changed."""

    written: int
    removed: int
    unchanged: bool
    revised: bool


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


def stored_checksums(conn: sa.Connection, chunks: Sequence[Chunk]) -> dict[Chunk, str]:
    """The checksum of the bars the warehouse holds in each chunk's window: one read per window the chunks share
    (an update's chunks mostly share one), an index range scan per symbol."""
    by_window: dict[tuple[str, str, pd.Timestamp, pd.Timestamp], dict[str, Chunk]] = {}
    for chunk in chunks:
        key = (chunk.provider, chunk.timeframe, chunk.window_start, chunk.window_end)
        by_window.setdefault(key, {})[chunk.symbol] = chunk
    c = bars.c
    out: dict[Chunk, str] = {}
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
            part = groups.get(symbol, frame.iloc[0:0])
            out[chunk] = frame_checksum(part.reset_index(drop=True))
    return out


def load_extension(
    conn: sa.Connection,
    chunk: Chunk,
    frame: pd.DataFrame,
    *,
    checksum: str,
    described: Mapping[str, object],
    flow_run_id: str | None,
) -> Extended | None:
    """Load an update's chunk into the row it extends, inside the caller's transaction. Returns what it did, or
    None when the row can no longer be extended
    (another run changed the series' rows since the plan): the caller loads the chunk on its own row then.

    The window's bars are made equal to the frame's (`write_window`, as for any chunk), and the row's count is
    that of its whole window after. `revised`: bars that were final when the row's earlier loads fetched them
    differ now. The row's checksum is that of the bars this load fetched; its `complete_through` stays where an
    earlier part of the row stopped being final, if that lies before this window."""
    row_chunk = chunk.extended_row()
    led = ingest_ledger.c
    series = (led.provider == chunk.provider, led.symbol == chunk.symbol, led.timeframe == chunk.timeframe)
    rows = conn.execute(
        sa.select(
            led.window_start,
            led.window_end,
            led.status,
            led.complete_through,
            led.revisions,
            led.adjustment,
            led.source_version,
        ).where(
            *series,
            led.window_start >= row_chunk.window_start.to_pydatetime(),
            led.window_start < chunk.window_end.to_pydatetime(),
        )
    ).all()
    spans = [(as_utc(r.window_start), as_utc(r.window_end)) for r in rows if r.status in EXTENDABLE]
    key = next((r for r in rows if as_utc(r.window_start) == row_chunk.window_start), None)
    stretch = segment_start([(a, b) for a, b in spans if a is not None and b is not None], chunk.window_start)
    if (
        key is None
        or key.status not in EXTENDABLE
        or stretch is None
        or stretch[0] != row_chunk.window_start
        or stretch[1] > chunk.window_end
    ):
        return None
    # How far the row's bars were final: each settled row's windows up to its complete_through.
    finals = [_final_end(r) for r in rows if r.status in EXTENDABLE]
    final_end = max(finals)
    not_final_before = [f for f in finals if f < chunk.window_start]
    through = described["complete_through"]
    if not_final_before:  # an earlier part was not final when fetched and this load does not fetch it again
        through = min(not_final_before).to_pydatetime()
    merged = {**described, "complete_through": through}
    rerun = as_utc(key.window_end) == chunk.window_end and len(rows) == 1
    if rerun and stored_checksums(conn, [chunk])[chunk] == checksum:  # held: its bars are the same
        if description_differs(key, merged):
            conn.execute(sa.update(ingest_ledger).where(*ledger_key(row_chunk)).values(**merged, updated_at=utc_now()))
        return Extended(written=0, removed=0, unchanged=True, revised=False)
    # written in two parts where the row's bars stop being final, so the first part's changes are restatements
    cut = min(max(final_end, chunk.window_start), chunk.window_end)
    written, removed, revised = 0, 0, False
    for part in (replace(chunk, window_end=cut), replace(chunk, window_start=cut)):
        if part.window_start >= part.window_end:
            continue
        done = dialect_for(conn).write_window(conn, part, _inside(frame, part))
        written, removed = written + done.written, removed + done.removed
        revised = revised or (part.window_end <= cut and key.status == "loaded" and done != (0, 0))
    folded = [
        r.window_start
        for r in rows
        if r is not key and as_utc(r.window_end) <= chunk.window_end and r.status != LedgerStatus.PARTIAL
    ]
    if folded:
        conn.execute(sa.delete(ingest_ledger).where(*series, led.window_start.in_(folded)))
    held = int(conn.execute(sa.select(sa.func.count()).select_from(bars).where(chunk_bars(row_chunk))).scalar_one())
    status = LedgerStatus.LOADED if held else LedgerStatus.EMPTY
    revisions = int(key.revisions or 0) + int(revised)
    ledger = ledger_row(
        row_chunk, status, rows=held, checksum=checksum, flow_run_id=flow_run_id, error=None, revisions=revisions
    )
    dialect_for(conn).upsert(conn, ingest_ledger, [{**ledger, **merged}], LOAD_UPDATE)
    return Extended(written=written, removed=removed, unchanged=False, revised=revised)


def _inside(frame: pd.DataFrame, chunk: Chunk) -> pd.DataFrame:
    """The frame's bars inside the chunk's window."""
    if frame.empty:
        return frame
    ts = frame["ts"]
    keep = np.asarray((ts >= chunk.window_start) & (ts < chunk.window_end))
    return frame if keep.all() else frame.loc[keep].reset_index(drop=True)


def _final_end(row: sa.Row[Any]) -> pd.Timestamp:
    end = as_utc(row.window_end)
    through = as_utc(row.complete_through)
    assert end is not None
    return end if through is None else min(end, through)
