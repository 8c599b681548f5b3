"""The nouns every layer shares: bar columns, chunks, ledger statuses and chunk outcomes."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

import pandas as pd

BAR_KEY = ("provider", "symbol", "timeframe", "ts")
BAR_VALUES = ("open", "high", "low", "close", "volume", "vwap", "trades")
BAR_COLUMNS = BAR_KEY + BAR_VALUES


class Adjustment(StrEnum):
    """What a chunk's prices are, recorded in its ledger row."""

    ADJUSTED = "adjusted"  # split (and for some vendors dividend) adjusted
    RAW = "raw"  # as traded


class LedgerStatus(StrEnum):
    LOADED = "loaded"
    EMPTY = "empty"
    REJECTED = "rejected"
    FAILED = "failed"

    @property
    def ok(self) -> bool:
        return self in (LedgerStatus.LOADED, LedgerStatus.EMPTY)


@dataclass(frozen=True, order=True)
class Chunk:
    """One unit of work: a symbol's bars at one timeframe in the half-open UTC window [start, end)."""

    provider: str
    symbol: str
    timeframe: str
    window_start: pd.Timestamp
    window_end: pd.Timestamp

    @property
    def key(self) -> tuple[str, str, str, pd.Timestamp]:
        return (self.provider, self.symbol, self.timeframe, self.window_start)

    def label(self) -> str:
        end = (self.window_end - pd.Timedelta(days=1)).date()
        return f"{self.provider}:{self.symbol}:{self.timeframe}:{self.window_start.date()}..{end}"


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
    """What one chunk task did: small enough to pass between tasks and print (never the bars)."""

    chunk: Chunk
    status: LedgerStatus
    rows: int = 0
    written: int = 0
    unchanged: bool = False
    error: str | None = None
    failed_expectations: list[str] = field(default_factory=list)
    seconds: float = 0.0
