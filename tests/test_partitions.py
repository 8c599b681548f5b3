"""Cutting a run into partitions (candleflow/partitions.py): sized by bars, and each partition's rectangle plans
again exactly the chunks it was cut from, whatever the timeframe's chunk period or the calendar's time zone."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest

from candleflow.model import EVERY_SYMBOL
from candleflow.partitions import EVERY_TICKER_SERIES, chunk_bars, cut_partitions
from candleflow.planning import plan_chunks
from candleflow.sessions import schedule
from candleflow.timeframes import ChunkPeriod, get_timeframe

D = dt.date


def _plan(symbols: list[str], timeframe: str, start: dt.date, end: dt.date, *, session: bool = False, tz: str = "UTC"):
    tf = get_timeframe(timeframe)
    if session:
        days = [d.date() for d in schedule(start, end, "XNYS").index]
        return plan_chunks("p", symbols, tf, start, end, period=ChunkPeriod.SESSION, sessions=days, tz=tz)
    return plan_chunks("p", symbols, tf, start, end)


def test_whole_series_are_packed_while_they_fit() -> None:
    chunks = _plan([f"S{i}" for i in range(10)], "1d", D(2021, 3, 5), D(2023, 6, 30))
    per_series = sum(chunk_bars(c) for c in chunks if c.symbol == "S0")
    parts = cut_partitions(chunks, int(per_series * 3.5))
    assert [p.symbols for p in parts] == [
        ("S0", "S1", "S2"),
        ("S3", "S4", "S5"),
        ("S6", "S7", "S8"),
        ("S9",),
    ]
    assert all((p.start, p.end) == (D(2021, 3, 5), D(2023, 6, 30)) for p in parts)
    assert sorted(c for p in parts for c in p.chunks) == sorted(chunks)  # each chunk in exactly one


def test_a_series_larger_than_a_partition_is_cut_along_its_windows() -> None:
    chunks = _plan(["BIG", "SMALL"], "1m", D(2024, 1, 10), D(2024, 6, 20))
    big = [c for c in chunks if c.symbol == "BIG"]
    size = int(chunk_bars(big[1]) * 2.5)  # two and a half months of minute bars
    parts = cut_partitions(chunks, size)
    cut = [p for p in parts if p.symbols == ("BIG",)]
    assert [c for p in cut for c in p.chunks] == big  # in window order, each once
    for part, following in itertools.pairwise(cut):  # each as full as it may be, never over
        assert part.bars <= size < part.bars + chunk_bars(following.chunks[0])
    # January from the 10th is short: it goes with February (and not March); then March-April, May-June 20
    assert [len(p.chunks) for p in cut] == [2, 2, 2]
    assert cut[0].start == D(2024, 1, 10) and cut[-1].end == D(2024, 6, 20)
    assert all(a.end < b.start for a, b in itertools.pairwise(cut))
    # an update's part is whole series (it plans from their watermarks): never cut
    assert [p.symbols for p in cut_partitions(chunks, 10, split_series=False)] == [("BIG",), ("SMALL",)]


@pytest.mark.parametrize(
    ("timeframe", "session", "tz"),
    [
        ("1d", False, "UTC"),
        ("1h", False, "UTC"),
        ("1m", False, "UTC"),
        ("1d", True, "UTC"),
        ("5m", True, "America/New_York"),
    ],
)
def test_each_rectangle_plans_exactly_its_own_chunks(timeframe: str, session: bool, tz: str) -> None:
    start, end = D(2023, 11, 15), D(2024, 2, 20)
    chunks = _plan(["A", "B", "C"], timeframe, start, end, session=session, tz=tz)
    for size in (1, int(chunk_bars(chunks[0]) * 1.5), int(sum(map(chunk_bars, chunks)) / 2)):
        for part in cut_partitions(chunks, size):
            again = _plan(list(part.symbols), timeframe, part.start, part.end, session=session, tz=tz)
            whole = {c.key for c in again}
            assert {c.key for c in part.chunks} <= whole
            # what the rectangle adds beyond its own chunks are the parent's too (held ones skip by the ledger)
            assert whole <= {c.key for c in chunks}


def test_a_chunk_of_every_ticker_counts_as_a_market_of_series() -> None:
    chunks = _plan([EVERY_SYMBOL], "1d", D(2024, 1, 1), D(2024, 1, 31), session=True)
    assert chunk_bars(chunks[0]) == pytest.approx(EVERY_TICKER_SERIES)
    parts = cut_partitions(chunks, EVERY_TICKER_SERIES * 5)
    assert [len(p.chunks) for p in parts] == [5, 5, 5, 5, 1]
    assert all(p.every for p in parts) and parts[0].describe() == "ALL 1d 2024-01-02..2024-01-08"
