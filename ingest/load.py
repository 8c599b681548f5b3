"""What the batch engine loads and what it says of each chunk: a fetched chunk's bars and description, the
results of the warehouse's load paths, and the one line a rejected chunk's ledger row and summary carry."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import pandas as pd

from candleflow.checksum import frame_checksum
from candleflow.model import Chunk, ChunkResult, OnInvalid
from candleflow.sessions import SessionHours, final_through
from candleflow.timeframes import get_timeframe
from expectations.explain import WaysOut, explain_verdict
from expectations.validate import ChunkVerdict
from warehouse.batch_load import ChunkLoad
from warehouse.load import LoadOutcome


@dataclass
class Fetched:
    """A chunk's bars as the provider sent them, with what its ledger row says about them."""

    chunk: Chunk
    frame: pd.DataFrame
    described: dict[str, Any]

    @cached_property
    def checksum(self) -> str:
        """Of what the provider sent, bad rows included: reruns compare it. Once per chunk, whichever path loads it."""
        return frame_checksum(self.frame)


@dataclass
class Finality:
    """How far each window's bars were final when fetched (`as_of`, the provider's clock read before fetching),
    by (window, timeframe, calendar): a batch's chunks mostly share a window, so one calendar lookup serves them."""

    as_of: pd.Timestamp
    known: dict[tuple[pd.Timestamp, pd.Timestamp, str, str], pd.Timestamp] = field(default_factory=dict)

    def described(self, item: Fetched) -> dict[str, Any]:
        """The chunk's description for its ledger row, with `complete_through`."""
        chunk = item.chunk
        key = (chunk.window_start, chunk.window_end, chunk.timeframe, chunk.calendar)
        if key not in self.known:
            intraday = get_timeframe(chunk.timeframe).intraday
            self.known[key] = final_through(chunk.window_start, chunk.window_end, intraday, self.as_of, chunk.calendar)
        return {**item.described, "complete_through": self.known[key]}

    def chunk_load(self, item: Fetched) -> ChunkLoad:
        return ChunkLoad(item.chunk, item.frame, item.checksum, **self.described(item))


def load_results(loads: list[ChunkLoad], outcomes: Mapping[int, LoadOutcome]) -> dict[Chunk, ChunkResult]:
    """What became of the chunks a many-chunk load path (`settle_unchanged`, `load_fresh_chunks`) handled."""
    return {loads[i].chunk: chunk_result(loads[i].chunk, o, rows=o.rows) for i, o in outcomes.items()}


def chunk_result(
    chunk: Chunk,
    outcome: LoadOutcome,
    *,
    rows: int,
    error: str | None = None,
    failed_expectations: list[str] | None = None,
) -> ChunkResult:
    return ChunkResult(
        chunk=chunk,
        status=outcome.status,
        rows=rows,
        written=outcome.written,
        unchanged=outcome.unchanged,
        revised=outcome.revised,
        removed=outcome.removed,
        error=error,
        failed_expectations=failed_expectations or [],
    )


def rejection(
    verdict: ChunkVerdict, frame: pd.DataFrame, on_invalid: OnInvalid, *, hours: SessionHours, hours_option: bool
) -> str:
    """What became of a chunk that failed validation, which rows broke which rule, and the ways out: one line
    for the run's summary and the chunk's ledger row. `hours_option`: the provider has an `hours` option (csv),
    named as a way out."""
    bad = f"{len(verdict.bad_rows)} bad row(s)"
    unreadable = int(frame["ts"].isna().sum()) if "ts" in frame.columns else 0
    if unreadable:  # the source's time was blank or unreadable: the provider kept the row to say so
        bad += f" ({unreadable} with an unreadable time)"
    rules = explain_verdict(verdict, frame, hours=hours, ways_out=WaysOut(on_invalid == "reject", hours_option))
    if on_invalid == "quarantine_rows":
        good = len(frame) - len(verdict.bad_rows)
        return f"{bad} quarantined, the other {good} loaded: {rules}"
    return f"{bad}; all {len(frame)} quarantined, none loaded: {rules}"
