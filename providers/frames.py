"""Bar frames in the canonical schema, as every provider returns them, and the helpers that make them."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

TS_DTYPE = "datetime64[us, UTC]"
FLOAT_COLUMNS = ("open", "high", "low", "close", "volume", "vwap")


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
