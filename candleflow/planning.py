"""Planning: cut a request into calendar-aligned chunks and drop what the ledger already holds. Pure."""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Literal

import numpy as np
import pandas as pd

from candleflow.errors import BadInputError
from candleflow.model import SETTLED, Chunk, LedgerEntry, LedgerStatus
from candleflow.timeframes import ChunkPeriod, Timeframe, get_timeframe

_PERIOD_FREQ = {ChunkPeriod.YEAR: "YS", ChunkPeriod.QUARTER: "QS", ChunkPeriod.MONTH: "MS"}


class PlanMode(StrEnum):
    MISSING = "missing"  # everything the ledger does not hold as loaded or empty
    FAILED = "failed"  # only chunks whose last outcome was failed or rejected
    ALL = "all"  # everything, whatever the ledger says


PlanModeName = Literal["missing", "failed", "all"]  # as a type, for the Prefect UI's run form


def parse_mode(value: str) -> PlanMode:
    try:
        return PlanMode(value)
    except ValueError:
        valid = ", ".join(m.value for m in PlanMode)
        raise BadInputError(f"unknown mode {value!r}: use one of {valid}") from None


def utc_midnight(date: dt.date) -> pd.Timestamp:
    return pd.Timestamp(date.year, date.month, date.day, tz="UTC")


def request_window(start: dt.date, end: dt.date) -> tuple[pd.Timestamp, pd.Timestamp]:
    """Inclusive session dates [start, end] as the half-open UTC window [start 00:00, end+1 00:00)."""
    return utc_midnight(start), utc_midnight(end + dt.timedelta(days=1))


def period_windows(
    start: pd.Timestamp, end: pd.Timestamp, period: ChunkPeriod
) -> list[tuple[pd.Timestamp, pd.Timestamp]]:
    """Split [start, end) at calendar-period boundaries (five-year blocks 2020-2024, 2025-2029, ...; years,
    quarters or months), clipped to the window."""
    if end <= start:
        return []
    if period is ChunkPeriod.FIVE_YEARS:
        firsts = (pd.Timestamp(year, 1, 1, tz=start.tz) for year in range(start.year + 1, end.year + 1))
        inner = [first for first in firsts if first.year % 5 == 0 and start < first < end]
    else:
        inner = pd.date_range(start, end, freq=_PERIOD_FREQ[period], inclusive="neither")
    cuts = [start, *inner, end]
    return [(a, b) for a, b in itertools.pairwise(cuts) if a < b]


def session_windows(
    sessions: Iterable[dt.date], timeframe: Timeframe, tz: str
) -> list[tuple[pd.Timestamp, pd.Timestamp]]:
    """One window per session date. Daily bars: the date's UTC day (where its session-dated bar sits).
    Intraday bars: the date's whole local day in the exchange's time zone `tz`, as UTC, so pre- and post-market
    bars stay with their session's date."""
    day = dt.timedelta(days=1)
    if not timeframe.intraday:
        return [(utc_midnight(d), utc_midnight(d + day)) for d in sessions]
    return [
        (pd.Timestamp(d, tz=tz).tz_convert("UTC"), pd.Timestamp(d + day, tz=tz).tz_convert("UTC")) for d in sessions
    ]


def plan_chunks(
    provider: str,
    symbols: Sequence[str],
    timeframe: Timeframe,
    start: dt.date,
    end: dt.date,
    *,
    period: ChunkPeriod | None = None,
    sessions: Sequence[dt.date] = (),
    tz: str = "UTC",
) -> list[Chunk]:
    """All chunks for the request, in symbol then time order: one per symbol and calendar period (the
    timeframe's, unless `period` says otherwise), or with `period=SESSION` one per symbol and session date in
    `sessions` (those within start..end)."""
    if (period or timeframe.chunk_period) is ChunkPeriod.SESSION:
        windows = session_windows([d for d in sessions if start <= d <= end], timeframe, tz)
    else:
        window_start, window_end = request_window(start, end)
        windows = period_windows(window_start, window_end, period or timeframe.chunk_period)
    return [Chunk(provider, symbol, timeframe.name, a, b) for symbol in symbols for a, b in windows]


def split_period(timeframe: Timeframe) -> ChunkPeriod:
    """The most a chunk that fails validation may keep out of the warehouse: its calendar year for daily bars,
    its month for intraday bars."""
    return ChunkPeriod.MONTH if timeframe.intraday else ChunkPeriod.YEAR


def sub_chunks(chunk: Chunk) -> list[Chunk]:
    """The calendar years (daily bars) or months (intraday) the chunk's window spans, each a chunk of its own
    clipped to the window; `[chunk]` when it spans one, or is one session's window."""
    if chunk.window_end - chunk.window_start <= pd.Timedelta(hours=25):  # a session's window: never cut
        return [chunk]
    windows = period_windows(chunk.window_start, chunk.window_end, split_period(get_timeframe(chunk.timeframe)))
    if len(windows) < 2:
        return [chunk]
    return [replace(chunk, window_start=start, window_end=end) for start, end in windows]


@dataclass(frozen=True)
class ChunkPart:
    """One sub-chunk of a chunk that failed validation: its rows (positions in the chunk's frame), and its bad
    rows (positions among its own rows) with the rules each broke."""

    chunk: Chunk
    rows: list[int]
    bad_rows: dict[int, list[str]]
    failed_rules: list[str]

    @property
    def ok(self) -> bool:
        return not self.bad_rows


def split_failed(
    chunk: Chunk, ts: pd.Series, bad_rows: Mapping[int, Sequence[str]], failed_rules: Sequence[str]
) -> list[ChunkPart] | None:
    """Cut a chunk that failed validation into its sub-chunks (`sub_chunks`), each with its rows and its share of
    the verdict, so only those holding bad rows need be rejected. The verdict is split, not recomputed: a rule
    judges a row by its own values, its window (each row lies in its part's) and, for uniqueness, the rows of
    the same time (which share its part).

    `ts` are the frame's times in row order. A row whose time lies in no part (blank, or outside the window) goes
    with the row before it (the first such rows, with the row after them). None when the chunk cannot be cut: it
    spans one year or month, a rule failed for the chunk as a whole rather than for rows, or no row has a time
    inside the window."""
    parts = sub_chunks(chunk)
    tied = {rule for rules in bad_rows.values() for rule in rules}
    if len(parts) < 2 or not set(failed_rules) <= tied:
        return None
    times = pd.Series(pd.to_datetime(ts, utc=True, errors="coerce").to_numpy(), dtype="datetime64[ns, UTC]")
    part_of = pd.Series(np.nan, index=times.index)
    for i, part in enumerate(parts):
        part_of[(times >= part.window_start) & (times < part.window_end)] = i
    if part_of.isna().all():
        return None
    placed = part_of.ffill().bfill().to_numpy(dtype="int64")
    out = []
    for i, part in enumerate(parts):
        rows = np.flatnonzero(placed == i).tolist()
        local = {position: j for j, position in enumerate(rows)}
        bad = {local[p]: list(rules) for p, rules in bad_rows.items() if p in local}
        broken = {rule for rules in bad.values() for rule in rules}
        out.append(ChunkPart(part, rows, bad, [rule for rule in failed_rules if rule in broken]))
    return out


@dataclass(frozen=True)
class Selection:
    todo: list[Chunk]
    skipped: list[Chunk]


def session_of(chunk: Chunk) -> dt.date:
    """The session date of a one-session chunk (see `session_windows`)."""
    day: dt.date = (chunk.window_start + pd.Timedelta(hours=12)).date()
    return day


# How many symbols one request serves: a number, or the provider's answer for a window's chunks
# (providers.base.Provider.symbols_per_request).
SymbolsPerRequest = int | Callable[[Sequence[Chunk]], int]


def group_chunks(chunks: Iterable[Chunk], max_symbols: SymbolsPerRequest) -> list[list[Chunk]]:
    """Chunks sharing a timeframe, window and exchange calendar, in groups of at most `max_symbols` (one request
    each), in timeframe then window order."""
    by_window: dict[tuple[str, pd.Timestamp, pd.Timestamp, str], list[Chunk]] = {}
    for chunk in chunks:
        key = (chunk.timeframe, chunk.window_start, chunk.window_end, chunk.calendar)
        by_window.setdefault(key, []).append(chunk)
    out: list[list[Chunk]] = []
    for _, group in sorted(by_window.items()):
        size = max(1, max_symbols if isinstance(max_symbols, int) else max_symbols(group))
        out += [group[i : i + size] for i in range(0, len(group), size)]
    return out


def estimated_rows(chunk: Chunk, session_hours: float = 6.5) -> float:
    """Roughly how many bars a chunk holds: about 252 sessions a year of `session_hours` each (a plan's size, not
    a promise: batches are cut by it)."""
    sessions = max(1.0, (chunk.window_end - chunk.window_start) / pd.Timedelta(days=365.25) * 252)
    timeframe = get_timeframe(chunk.timeframe)
    per_session = pd.Timedelta(hours=session_hours) / timeframe.step if timeframe.intraday else 1.0
    return float(sessions * per_session)


def batch_chunks(
    chunks: Sequence[Chunk],
    max_symbols: SymbolsPerRequest,
    *,
    rows: int,
    max_chunks: int,
    workers: int = 1,
    session_hours: float = 6.5,
) -> list[list[Chunk]]:
    """Chunks in batches of about `rows` bars (at most `max_chunks` chunks), one task each, so small chunks share
    a task's fixed costs (one suite call, one limit acquisition). A request's chunks (`group_chunks`) stay in
    one batch and every batch holds one exchange calendar. Small runs are spread over `workers` batches at
    least, so they still run in parallel."""
    groups = group_chunks(chunks, max_symbols)
    total = sum(estimated_rows(c, session_hours) for c in chunks)
    target = max(1.0, min(float(rows), total / max(1, workers)))
    batches: list[list[Chunk]] = []
    current: list[Chunk] = []
    size = 0.0
    for group in sorted(groups, key=lambda g: (g[0].calendar, g[0].symbol, g[0].window_start)):
        if current and (current[0].calendar != group[0].calendar or len(current) + len(group) > max_chunks):
            batches.append(current)
            current, size = [], 0.0
        current += group
        size += sum(estimated_rows(c, session_hours) for c in group)
        if size >= target:
            batches.append(current)
            current, size = [], 0.0
    if current:
        batches.append(current)
    return batches


def select_chunks(
    chunks: Iterable[Chunk],
    ledger: Iterable[LedgerEntry],
    mode: PlanMode,
    *,
    adjustment: str | None = None,
    versions: Mapping[dt.date, str | None] | None = None,
    whole: Iterable[LedgerEntry] = (),
) -> Selection:
    """Keep the chunks `mode` asks for, given the ledger's last outcomes.

    A chunk counts as held when ledger rows that say `loaded`, `empty` or `partial` span its window (one row, or
    several end to end), each only as far as it was final when fetched (`complete_through`), whose bars are all
    still there (when the ledger was read with bar counts: bars deleted behind its back are fetched again), with
    the same `adjustment` (rows from before adjustments were recorded count) and, when `versions` of the sources
    are given (one per session date), the same source version: a republished file is fetched again.

    Of a chunk not held, only its calendar years (daily bars) or months (intraday) that are not held are planned,
    joined where they touch: a chunk split when it failed validation refetches only its rejected years.

    `whole`: rows of chunks of every ticker (`--symbols ALL`) read from the same sources as the chunks (a date's
    flat file): each holds every ticker's chunk of its window too.
    """
    chunks = list(chunks)
    if mode is PlanMode.ALL:
        return Selection(todo=chunks, skipped=[])
    by_series: dict[tuple[str, str, str], list[LedgerEntry]] = {}
    for entry in ledger:
        by_series.setdefault((entry.provider, entry.symbol, entry.timeframe), []).append(entry)
    by_window = {(e.provider, e.timeframe, e.window_start): e for e in whole}
    todo: list[Chunk] = []
    skipped: list[Chunk] = []
    for chunk in chunks:
        entries = by_series.get((chunk.provider, chunk.symbol, chunk.timeframe), [])
        current = versions.get(session_of(chunk)) if versions is not None else None
        file = by_window.get((chunk.provider, chunk.timeframe, chunk.window_start))
        read_whole = [replace(file, symbol=chunk.symbol)] if file is not None else []
        holding = [
            e
            for e in entries + read_whole
            if e.status.settled
            and e.overlaps(chunk)
            and e.intact
            and (adjustment is None or e.adjustment in (None, adjustment))
            and (versions is None or e.source_version == current)
        ]
        wanted = [chunk] if not holding else [] if _covered(chunk, holding) else _unheld(chunk, holding)
        if mode is PlanMode.FAILED:
            bad = (LedgerStatus.FAILED, LedgerStatus.REJECTED)
            wanted = [part for part in wanted if any(e.status in bad and e.overlaps(part) for e in entries)]
        todo += wanted
        if not wanted:
            skipped.append(chunk)
    return Selection(todo=todo, skipped=skipped)


def _unheld(chunk: Chunk, holding: Sequence[LedgerEntry]) -> list[Chunk]:
    """The parts of a chunk not held, cut at its years (daily) or months (intraday) and joined where they
    touch: the whole chunk, unless some of its years or months are held on their own (a chunk split when it
    failed validation, or year rows an older candleflow wrote)."""
    parts = sub_chunks(chunk)
    runs: list[Chunk] = []
    for part in (p for p in parts if not _covered(p, holding)):
        if runs and runs[-1].window_end == part.window_start:
            runs[-1] = replace(runs[-1], window_end=part.window_end)
        else:
            runs.append(part)
    return [chunk] if runs == [chunk] else runs


def _covered(chunk: Chunk, entries: Sequence[LedgerEntry]) -> bool:
    """Whether the final parts of `entries` (each up to its `complete_through`) together span the chunk's whole
    window: one row for the window or a wider one, or several narrower rows end to end (a five-year chunk over
    the year rows an older candleflow wrote)."""
    spans = sorted((e.window_start, e.final_end) for e in entries)
    reached = chunk.window_start
    for start, end in spans:
        if start > reached:
            break
        reached = max(reached, end)
        if reached >= chunk.window_end:
            return True
    return bool(reached >= chunk.window_end)


def period_start(ts: pd.Timestamp, period: ChunkPeriod) -> pd.Timestamp:
    """The first instant (UTC midnight) of the calendar period `ts` lies in: its five-year block, year, quarter
    or month; its own day for SESSION."""
    day = ts.tz_convert("UTC").normalize()
    if period is ChunkPeriod.FIVE_YEARS:
        return pd.Timestamp(day.year - day.year % 5, 1, 1, tz="UTC")
    if period is ChunkPeriod.YEAR:
        return pd.Timestamp(day.year, 1, 1, tz="UTC")
    if period is ChunkPeriod.QUARTER:
        return pd.Timestamp(day.year, (day.month - 1) // 3 * 3 + 1, 1, tz="UTC")
    if period is ChunkPeriod.MONTH:
        return pd.Timestamp(day.year, day.month, 1, tz="UTC")
    return day


def segment_start(
    spans: Iterable[tuple[pd.Timestamp, pd.Timestamp]], at: pd.Timestamp
) -> tuple[pd.Timestamp, pd.Timestamp] | None:
    """Of the windows `spans`, joined where they touch or overlap, the stretch (start, end) that reaches `at`
    (start <= at <= end); None when none does."""
    stretch: tuple[pd.Timestamp, pd.Timestamp] | None = None
    for start, end in sorted(spans):
        if stretch is not None and start <= stretch[1]:
            stretch = (stretch[0], max(stretch[1], end))
        elif start <= at:
            stretch = (start, end)
        else:
            break
    if stretch is None or stretch[1] < at:
        return None
    return stretch


def extension_of(chunk: Chunk, entries: Iterable[LedgerEntry], period: ChunkPeriod, adjustment: str | None) -> Chunk:
    """An update's chunk, marked to extend the series' ledger row it continues (`Chunk.extends`): the first of the
    settled rows (`loaded` or `empty`, bars all there, same adjustment) that start in the chunk's calendar period
    and reach its window one after another. So a daily update lengthens one row per series and period instead of
    adding a row per series per day, and the per-day rows an older candleflow wrote fold into it on load.

    The chunk unchanged when no such row starts before it, or one of them reaches past its end (an update with
    an earlier end than before: its row would claim less than they do), or the chunk is one session's window."""
    if period is ChunkPeriod.SESSION or chunk.every:
        return chunk
    floor = period_start(chunk.window_start, period)
    spans = [
        (e.window_start, e.window_end)
        for e in entries
        if (e.provider, e.symbol, e.timeframe) == (chunk.provider, chunk.symbol, chunk.timeframe)
        and e.status in SETTLED
        and e.intact
        and (adjustment is None or e.adjustment in (None, adjustment))
        and floor <= e.window_start < chunk.window_end
    ]
    stretch = segment_start(spans, chunk.window_start)
    if stretch is None or stretch[0] >= chunk.window_start or stretch[1] > chunk.window_end:
        return chunk
    return replace(chunk, extends=stretch[0])


def incremental_start(
    watermark: pd.Timestamp | None,
    timeframe: Timeframe,
    today: dt.date,
    lookback_days: int,
    overlap: dt.timedelta | None,
    previous_session: dt.date | None,
) -> dt.date:
    """First session date an incremental run re-fetches for one series.

    With a watermark: the watermark's date minus the overlap (default: the session before it for daily bars,
    one day for intraday bars), so late provider corrections are picked up. Without one (a new series): today
    minus the lookback.
    """
    if watermark is None:
        return today - dt.timedelta(days=lookback_days)
    mark: dt.date = watermark.date()
    if overlap is not None:
        return mark - overlap
    if not timeframe.intraday and previous_session is not None:
        return previous_session
    return mark - dt.timedelta(days=1)
