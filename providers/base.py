"""The provider contract: one verb, `fetch(request) -> canonical frame`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Protocol

import numpy as np
import pandas as pd

from candleflow.timeframes import Timeframe

TS_DTYPE = "datetime64[us, UTC]"
FLOAT_COLUMNS = ("open", "high", "low", "close", "volume", "vwap")


@dataclass(frozen=True)
class FetchRequest:
    """Bars for `symbols` at `timeframe` with open time in the half-open UTC window [start, end)."""

    symbols: tuple[str, ...]
    timeframe: Timeframe
    start: pd.Timestamp
    end: pd.Timestamp


class Provider(Protocol):
    name: ClassVar[str]
    requests_per_second: ClassVar[float]  # the vendor's request budget: Prefect's rate limit slot decay

    def fetch(self, request: FetchRequest) -> pd.DataFrame:
        """Return the request's bars as a canonical frame (see `canonical_frame`), or raise ProviderError."""
        ...


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
    return out.sort_values(["symbol", "ts"], kind="stable").reset_index(drop=True)
