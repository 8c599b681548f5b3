"""The nouns every layer shares: bar columns, chunks, ledger statuses and chunk outcomes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

import pandas as pd

BAR_KEY = ("provider", "symbol", "timeframe", "ts")
BAR_VALUES = ("open", "high", "low", "close", "volume", "vwap", "trades")
BAR_COLUMNS = BAR_KEY + BAR_VALUES

# The symbol of a chunk of every ticker its source holds for a window (`--symbols ALL`: a flat file, a grouped-daily
# answer): one ledger row per file and date instead of one per ticker. No symbol rule admits it, so it never names a
# ticker's series; its bars are stored under their own tickers.
EVERY_SYMBOL = "*"


def every_ticker(symbols: Sequence[str] | None) -> bool:
    """Whether `symbols` are every ticker of the source (`--symbols ALL` resolves to EVERY_SYMBOL alone)."""
    return symbols is not None and list(symbols) == [EVERY_SYMBOL]


def shown_symbol(symbol: str) -> str:
    """A stored symbol as a person reads it: `ALL` for EVERY_SYMBOL."""
    return "ALL" if symbol == EVERY_SYMBOL else symbol


# What to do with a chunk that fails validation: keep all of it out, or load its good rows. Bad rows go to
# `quarantine` either way.
OnInvalid = Literal["reject", "quarantine_rows"]


class Adjustment(StrEnum):
    """What a chunk's prices are, recorded in its ledger row."""

    ADJUSTED = "adjusted"  # split (and for some vendors dividend) adjusted
    RAW = "raw"  # as traded


class LedgerStatus(StrEnum):
    """A chunk's last outcome. `partial`: its good rows loaded and its bad rows quarantined (on_invalid=
    quarantine_rows), which settles it like `loaded`; `rejected`: validation kept its bars out; `failed`: an
    error after retries."""

    LOADED = "loaded"
    EMPTY = "empty"
    PARTIAL = "partial"
    REJECTED = "rejected"
    FAILED = "failed"

    @property
    def ok(self) -> bool:
        """The chunk loaded everything the provider sent (a run of such chunks exits 0)."""
        return self in (LedgerStatus.LOADED, LedgerStatus.EMPTY)

    @property
    def settled(self) -> bool:
        """Nothing more to fetch for the chunk until its source changes (`--mode missing` holds it)."""
        return self in (LedgerStatus.LOADED, LedgerStatus.EMPTY, LedgerStatus.PARTIAL)


# The statuses of a row whose window's bars are all there: it may hold its chunk exactly (warehouse.ledger.holds),
# and an update's chunk may extend it (candleflow.planning.extension_of).
SETTLED = (LedgerStatus.LOADED, LedgerStatus.EMPTY)


@dataclass(frozen=True, order=True)
class Chunk:
    """One unit of work: a symbol's bars at one timeframe in the half-open UTC window [start, end)."""

    provider: str
    symbol: str
    timeframe: str
    window_start: pd.Timestamp
    window_end: pd.Timestamp
    # The exchange calendar the symbol's sessions follow (validation, coverage, completeness); not part of the key.
    calendar: str = field(default="XNYS", compare=False)
    # An update's chunk: the window_start of the series' settled ledger row that reaches this window (same calendar
    # period). Its bars are fetched, validated and written for this window alone; on load that row is extended to
    # this window's end instead of a new row being added per series per day. Not part of the key.
    extends: pd.Timestamp | None = field(default=None, compare=False)

    @property
    def key(self) -> tuple[str, str, str, pd.Timestamp]:
        return (self.provider, self.symbol, self.timeframe, self.window_start)

    def extended_row(self) -> Chunk:
        """The window of the ledger row this chunk's load extends (`extends`): from that row's start to this
        chunk's end; the chunk itself when it extends none."""
        if self.extends is None:
            return self
        return Chunk(self.provider, self.symbol, self.timeframe, self.extends, self.window_end, self.calendar)

    @property
    def every(self) -> bool:
        """Whether it holds every ticker its source has for the window (`--symbols ALL`)."""
        return self.symbol == EVERY_SYMBOL

    @property
    def shown_symbol(self) -> str:
        """The symbol as a person reads it: `ALL` for a chunk of every ticker."""
        return shown_symbol(self.symbol)

    def label(self) -> str:
        end = (self.window_end - pd.Timedelta(days=1)).date()
        return f"{self.provider}:{self.shown_symbol}:{self.timeframe}:{self.window_start.date()}..{end}"

    def period(self) -> str:
        """The window in calendar words: `2020-2024`, `2024`, `2024-Q1`, `2024-03`, `2024-03-05`, else
        `first..last` date."""
        return window_period(self.window_start, self.window_end)

    def task_name(self) -> str:
        """What its task run is called in the Prefect UI, e.g. `ingest AAPL 1m 2024-03`."""
        return f"ingest {self.shown_symbol} {self.timeframe} {self.period()}"


def window_period(start: pd.Timestamp, end: pd.Timestamp) -> str:
    """A half-open UTC window [start, end) named as the calendar period it is. A window of one local day (an
    intraday chunk of one session in its exchange's time zone) is named by that day."""
    midnight = start == start.normalize() and end == end.normalize()
    if midnight and start.month == 1 and start.day == 1 and end == start + pd.DateOffset(years=1):
        return f"{start.year}"
    if midnight and start.month == 1 and start.day == 1 and end.month == 1 and end.day == 1:
        return f"{start.year}-{end.year - 1}"
    if midnight and start.day == 1 and start.month % 3 == 1 and end == start + pd.DateOffset(months=3):
        return f"{start.year}-Q{(start.month - 1) // 3 + 1}"
    if midnight and start.day == 1 and end == start + pd.DateOffset(months=1):
        return f"{start:%Y-%m}"
    if end - start <= pd.Timedelta(hours=25):  # a day, or a local day across a DST change
        return f"{(start + pd.Timedelta(hours=12)).date()}"
    return f"{start.date()}..{(end - pd.Timedelta(days=1)).date()}"


@dataclass(frozen=True)
class LedgerEntry:
    """The last outcome recorded for one chunk."""

    provider: str
    symbol: str
    timeframe: str
    window_start: pd.Timestamp
    window_end: pd.Timestamp
    status: LedgerStatus
    rows: int | None = None
    checksum: str | None = None
    adjustment: str | None = None
    source_version: str | None = None
    complete_through: pd.Timestamp | None = None  # None: final for its whole window
    present: int | None = None  # bars its window holds now, when counted (read_ledger(count_bars=True))
    error: str | None = None  # why it failed or was rejected, as recorded

    @property
    def intact(self) -> bool:
        """Its window still holds the bars it recorded (unknown counts as intact)."""
        return self.present is None or self.rows is None or self.present >= self.rows

    @property
    def final_end(self) -> pd.Timestamp:
        """How far its window was final when fetched: the window's end, or `complete_through` if earlier."""
        if self.complete_through is None:
            return self.window_end
        return min(self.window_end, self.complete_through)

    def covers(self, chunk: Chunk) -> bool:
        return (
            (self.provider, self.symbol, self.timeframe) == (chunk.provider, chunk.symbol, chunk.timeframe)
            and self.window_start <= chunk.window_start
            and self.window_end >= chunk.window_end
        )

    def overlaps(self, chunk: Chunk) -> bool:
        return (
            (self.provider, self.symbol, self.timeframe) == (chunk.provider, chunk.symbol, chunk.timeframe)
            and self.window_start < chunk.window_end
            and self.window_end > chunk.window_start
        )


@dataclass
class ChunkResult:
    """What became of one chunk: small enough to pass between tasks and print (never the bars)."""

    chunk: Chunk
    status: LedgerStatus
    rows: int = 0
    written: int = 0
    unchanged: bool = False
    revised: bool = False  # the vendor restated bars of a chunk that was final: they were upserted
    removed: int = 0  # bars of the window the source no longer has: deleted
    error: str | None = None
    failed_expectations: list[str] = field(default_factory=list)
