"""Cutting a run's chunks into partitions for the work pool: groups of series x windows of about a number of bars,
each a child flow run that plans its own part again (a rectangle of symbols and session dates at one timeframe)
and fetches what its ledger does not hold. Pure: no Prefect, no warehouse.

A partition's rectangle is drawn so that its own plan cuts the same chunks as the parent's: its dates start and
end where the parent's chunks do (the parent's first and last dates, or calendar-period boundaries), so a child
plans no chunk the parent did not, and skips by its ledger what the parent skipped (mode missing or failed)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from candleflow.model import EVERY_SYMBOL, Chunk, shown_symbol
from candleflow.planning import estimated_rows

# A chunk of every ticker (`--symbols ALL`) is counted as this many series: about the US market's listed tickers.
EVERY_TICKER_SERIES = 10_000


@dataclass(frozen=True)
class Partition:
    """Part `number` of a run: its chunks, all at one timeframe, and the rectangle a child run plans them from."""

    number: int
    timeframe: str
    symbols: tuple[str, ...]  # (EVERY_SYMBOL,) for a run of every ticker
    start: dt.date
    end: dt.date
    chunks: tuple[Chunk, ...]
    bars: float

    @property
    def every(self) -> bool:
        return self.symbols == (EVERY_SYMBOL,)

    def describe(self) -> str:
        """`40 symbols 1d 2020-01-01..2024-12-31`, `AAPL 1m 2024-01-01..2024-03-31`."""
        if len(self.symbols) <= 3:
            who = ",".join(shown_symbol(s) for s in self.symbols)
        else:
            who = f"{len(self.symbols)} symbols"
        return f"{who} {self.timeframe} {self.start}..{self.end}"


def chunk_dates(chunk: Chunk) -> tuple[dt.date, dt.date]:
    """The first and last session dates a chunk's window holds: a period window's UTC dates, or a session
    window's local date (it starts at local midnight of the exchange's time zone)."""
    half_day = pd.Timedelta(hours=12)
    return (chunk.window_start + half_day).date(), (chunk.window_end - half_day).date()


def chunk_bars(chunk: Chunk, session_hours: float = 6.5) -> float:
    """About how many bars fetching the chunk writes: a chunk of every ticker counts EVERY_TICKER_SERIES series."""
    return estimated_rows(chunk, session_hours) * (EVERY_TICKER_SERIES if chunk.every else 1)


def cut_partitions(
    chunks: Sequence[Chunk], bars: int, *, session_hours: float = 6.5, split_series: bool = True
) -> list[Partition]:
    """The chunks in partitions of about `bars` bars: per timeframe, whole series packed together in the run's
    order while they fit; a series larger than `bars` alone, cut along its windows (at least one chunk each)
    unless `split_series` is off (an update's part is whole series: it plans from their watermarks)."""
    by_series: dict[tuple[str, str], list[Chunk]] = {}
    for chunk in chunks:
        by_series.setdefault((chunk.timeframe, chunk.symbol), []).append(chunk)
    groups: list[list[Chunk]] = []
    packing: dict[str, tuple[list[Chunk], float]] = {}  # by timeframe: the group being filled with whole series
    for (timeframe, _), series in by_series.items():
        series.sort(key=lambda c: c.window_start)
        size = sum(chunk_bars(c, session_hours) for c in series)
        if size > bars and split_series:  # its own partitions, along its windows
            run: list[Chunk] = []
            filled = 0.0
            for chunk in series:
                weight = chunk_bars(chunk, session_hours)
                if run and filled + weight > bars:
                    groups.append(run)
                    run, filled = [], 0.0
                run.append(chunk)
                filled += weight
            groups.append(run)
            continue
        group, filled = packing.get(timeframe, ([], 0.0))
        if group and filled + size > bars:
            groups.append(group)
            group, filled = [], 0.0
        packing[timeframe] = (group + series, filled + size)
    groups += [group for group, _ in packing.values() if group]
    return [_partition(i, group, session_hours) for i, group in enumerate(groups, start=1)]


def _partition(number: int, chunks: list[Chunk], session_hours: float) -> Partition:
    symbols = tuple(dict.fromkeys(c.symbol for c in chunks))
    dates = [chunk_dates(c) for c in chunks]
    return Partition(
        number=number,
        timeframe=chunks[0].timeframe,
        symbols=symbols,
        start=min(first for first, _ in dates),
        end=max(last for _, last in dates),
        chunks=tuple(chunks),
        bars=sum(chunk_bars(c, session_hours) for c in chunks),
    )


def planned_bars(chunks: Sequence[Chunk], session_hours: float = 6.5) -> float:
    """About how many bars the chunks hold (what decides whether a run is cut into partitions)."""
    return sum(chunk_bars(c, session_hours) for c in chunks)
