"""The provider contract: one verb, `fetch(request) -> canonical frame`."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar, Protocol, runtime_checkable

import numpy as np
import pandas as pd

from candleflow.model import Adjustment, Chunk
from candleflow.sessions import SessionHours
from candleflow.timeframes import ChunkPeriod, Timeframe, get_timeframe

TS_DTYPE = "datetime64[us, UTC]"
FLOAT_COLUMNS = ("open", "high", "low", "close", "volume", "vwap")


@dataclass(frozen=True)
class FetchRequest:
    """Bars for `symbols` at `timeframe` with open time in the half-open UTC window [start, end)."""

    symbols: tuple[str, ...]
    timeframe: Timeframe
    start: pd.Timestamp
    end: pd.Timestamp


def request_for(chunks: Sequence[Chunk]) -> FetchRequest:
    """One provider request for chunks that share a window (one symbol each)."""
    first = chunks[0]
    symbols = tuple(c.symbol for c in chunks)
    return FetchRequest(symbols, get_timeframe(first.timeframe), first.window_start, first.window_end)


# A named source of a provider (`csv:quandl`): stored as part of its provider key, so it must stay short and plain.
SOURCE_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]{0,23}")
SOURCE_RULE = "use 1-24 of a-z 0-9 _ - (for example quandl)"

SOURCE_VERSION = "source_version"  # frame.attrs key: the version of the source the bars came from (an ETag)
# frame.attrs key: requested symbols the vendor does not know, when it answered for the others of a
# many-symbol request (their chunks fail as terminal errors; the others load)
UNKNOWN_SYMBOLS = "unknown_symbols"


class Provider(Protocol):
    name: ClassVar[str]
    requests_per_second: ClassVar[float]  # the vendor's request budget: Prefect's rate limit slot decay
    # How many symbols one request may serve. Above 1, the flow groups chunks sharing a window into one task,
    # which fetches once and still validates, loads and records each symbol's chunk on its own.
    max_symbols_per_request: ClassVar[int]
    # None: chunks follow the timeframe's period. SESSION: one chunk per session date (one file per date).
    chunk_period: ClassVar[ChunkPeriod | None]
    # False when the provider cannot tell an unknown symbol from one with no bars in the window.
    knows_symbols: ClassVar[bool]
    # True when an interval without trades has no bar (vendors' aggregates): a short session is not a gap then.
    bars_only_when_traded: ClassVar[bool]
    # Which intraday bars belong to a session: `regular` hours only, or `extended` (pre- and post-market too).
    session_hours: SessionHours

    @property
    def adjustment(self) -> Adjustment:
        """Whether the bars this provider returns are adjusted or raw, as configured."""
        ...

    def fetch(self, request: FetchRequest) -> pd.DataFrame:
        """Return the request's bars as a canonical frame (see `canonical_frame`), or raise ProviderError."""
        ...


@runtime_checkable
class CheckedSource(Protocol):
    """A provider whose options depend on the machine it runs on (a directory, a file per symbol): it checks
    them before a run starts, so a bad one is refused as bad input instead of failing every chunk."""

    def check_inputs(self, symbols: Sequence[str], timeframes: Sequence[Timeframe]) -> None:
        """Raise BadInputError naming the option or symbol and the fix; never fetches bars."""
        ...


@runtime_checkable
class KeyedSource(Protocol):
    """A provider that needs keys (an API key, flat-file credentials): it says which are missing before a run
    starts, so a run without them is refused as bad input instead of failing every chunk."""

    def missing_keys(self) -> str | None:
        """None when its keys are at hand (in the options or the environment); else the variables to set."""
        ...


@runtime_checkable
class ClockedSource(Protocol):
    """A provider with a clock of its own (the synthetic provider's `now`): which bars had closed is decided by
    it, not by the machine's clock."""

    def now(self) -> pd.Timestamp:
        """The moment the provider answers as of (UTC)."""
        ...


@runtime_checkable
class VersionedSource(Protocol):
    """A provider whose sources are published objects with versions (flat files)."""

    def source_versions(self, timeframe: Timeframe, dates: list[dt.date]) -> dict[dt.date, str | None]:
        """The current version of each date's source, None when it is not published (yet)."""
        ...


@runtime_checkable
class PricedSource(Protocol):
    """A provider that charges for data and can quote a request before it is made."""

    def estimate_cost(self, requests: list[FetchRequest]) -> float:
        """The vendor's price in US dollars for all `requests`."""
        ...


NEW_YORK = "America/New_York"


def session_dated(ts: pd.Series, tz: str = NEW_YORK) -> pd.Series:
    """Daily bars stamped at local midnight (Polygon: midnight New York, 05:00Z or 04:00Z by DST) as their
    session date at 00:00 UTC, the warehouse's convention for daily bars."""
    return ts.dt.tz_convert(tz).dt.tz_localize(None).dt.normalize().dt.tz_localize("UTC")


def aggregate_bars(bars: pd.DataFrame, step: pd.Timedelta) -> pd.DataFrame:
    """Finer bars (symbol, ts, open, high, low, close, volume[, trades]) as bars of `step` on the UTC grid: open of
    the first, close of the last, high/low extremes, volume and trades summed. Buckets with no bar have none."""
    bars = bars.sort_values(["symbol", "ts"], kind="stable")
    bars = bars.assign(bucket=bars["ts"].dt.floor(step))
    how = {"open": "first", "high": "max", "low": "min", "close": "last", "volume": "sum"}
    if "trades" in bars.columns:
        how["trades"] = "sum"
    out = bars.groupby(["symbol", "bucket"], sort=True).agg(how).reset_index()
    return out.rename(columns={"bucket": "ts"})


def bar_frame(
    provider: str, timeframe: str, symbols: np.ndarray, ts_ns: np.ndarray, values: Mapping[str, np.ndarray]
) -> pd.DataFrame:
    """A canonical bar frame built straight from arrays (`symbols` per row, `ts_ns` as int64 nanoseconds since
    the epoch in UTC, and `values` with open, high, low, close, volume, vwap and trades), with the dtypes
    `canonical_frame` gives, without its coercions: for providers that generate or decode bars as arrays."""
    n = len(ts_ns)
    ts = pd.DatetimeIndex(np.asarray(ts_ns, dtype="int64").view("datetime64[ns]"), tz="UTC").as_unit("us")
    return pd.DataFrame(
        {
            "provider": pd.array(np.full(n, provider, dtype=object), dtype=str),
            "symbol": pd.array(np.asarray(symbols, dtype=object), dtype=str),
            "timeframe": pd.array(np.full(n, timeframe, dtype=object), dtype=str),
            "ts": ts,
            **{col: np.asarray(values[col], dtype="float64") for col in FLOAT_COLUMNS},
            "trades": pd.array(np.asarray(values["trades"], dtype="int64"), dtype="Int64"),
        }
    )


def canonical_frame(frame: pd.DataFrame, *, provider: str, timeframe: str) -> pd.DataFrame:
    """Coerce `frame` to the canonical bar schema: columns in order, UTC microsecond ts, float prices,
    nullable integer trades, sorted by (symbol, ts), a fresh RangeIndex. Values are not judged here:
    that is validation's job."""

    def column(name: str) -> pd.Series:
        return frame[name] if name in frame.columns else pd.Series(np.nan, index=frame.index, dtype="float64")

    out = pd.DataFrame(
        {
            "provider": pd.Series(provider, index=frame.index, dtype=str),
            "symbol": frame["symbol"].astype(str),
            "timeframe": pd.Series(timeframe, index=frame.index, dtype=str),
            "ts": pd.to_datetime(frame["ts"], utc=True).dt.as_unit("us"),
            **{col: pd.to_numeric(column(col), errors="coerce").astype("float64") for col in FLOAT_COLUMNS},
            "trades": pd.to_numeric(column("trades"), errors="coerce").astype("Int64"),
        }
    )
    if _sorted_by_symbol_and_ts(out):  # the common case: sorting is a tenth of a fetch's cost, skip it
        return out.reset_index(drop=True)
    return out.sort_values(["symbol", "ts"], kind="stable").reset_index(drop=True)


def _sorted_by_symbol_and_ts(frame: pd.DataFrame) -> bool:
    if len(frame) < 2:
        return True
    if frame["ts"].isna().any():
        return False
    ts = frame["ts"].array.asi8  # int64 microseconds: no Timestamp objects
    symbols = frame["symbol"].to_numpy(dtype=object)
    same = symbols[1:] == symbols[:-1]
    return bool(((same & (ts[1:] >= ts[:-1])) | (~same & (symbols[1:] > symbols[:-1]))).all())
