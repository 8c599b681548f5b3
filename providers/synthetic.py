"""`synthetic`: deterministic, calendar-aware bars with no network, and knobs to inject failures.

How the bars are made (so that any chunking of a request yields the same bars):
- Each symbol has a daily random walk of session closes from 1990, seeded by (seed, symbol) only.
- Each session has a 1-minute path from its open to that close (a Brownian bridge), seeded by
  (seed, symbol, session date) only. Every timeframe is aggregated from that path on the UTC grid, so a 1h bar
  is exactly its 60 one-minute bars and a daily bar is its whole session. Early closes are the calendar's.
- Only bars that have closed by `now` exist, as at a real vendor.

Knobs (all seeded, so tests are repeatable):
- `transient_failure_rate`: the share of requests that fail with a TransientProviderError for their first
  `transient_failures_per_request` calls (the count is kept per process, like a flaky server's), then succeed.
- `invalid_chunk_rate`: the share of requests whose answer carries one bad bar, of kind `invalid_kind`.
- `unknown_symbols`: symbols the "vendor" does not know: a TerminalProviderError, never retried.
"""

from __future__ import annotations

import hashlib
import threading
from collections import Counter
from functools import lru_cache
from typing import ClassVar, Literal

import numpy as np
import pandas as pd
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from candleflow import sessions
from candleflow.model import Adjustment
from candleflow.sessions import SessionHours
from candleflow.timeframes import ChunkPeriod
from providers.base import FetchRequest, canonical_frame
from providers.errors import TerminalProviderError, TransientProviderError

InvalidKind = Literal["high_below_low", "negative_price", "null_close", "duplicate_ts", "off_grid"]

_MINUTE = pd.Timedelta(minutes=1)
_DAILY_VOL = 0.015
_calls: Counter[tuple[object, ...]] = Counter()
_calls_lock = threading.Lock()


class SyntheticOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seed: int = 0
    calendar: str = sessions.DEFAULT_CALENDAR
    now: AwareDatetime | None = Field(default=None, description="clock for 'bars closed by now' (default: real)")
    transient_failure_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    transient_failures_per_request: int = Field(default=1, ge=1)
    invalid_chunk_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    invalid_kind: InvalidKind = "high_below_low"
    unknown_symbols: tuple[str, ...] = ()


def _symbol_key(symbol: str) -> int:
    return int.from_bytes(hashlib.blake2b(symbol.encode(), digest_size=8).digest(), "big")


def _window_key(start: pd.Timestamp) -> int:
    return int(start.value // 1_000_000_000)


@lru_cache(maxsize=256)
def _daily_closes(seed: int, symbol: str, calendar: str) -> pd.Series:
    """Log close per session since 1990: a seeded random walk (the anchor every bar of the symbol hangs on)."""
    cal = sessions.get_calendar(calendar)
    dates = cal.sessions
    key = _symbol_key(symbol)
    rng = np.random.default_rng([seed, key, 0])
    start_price = 20.0 + (key % 48_000) / 100.0
    returns = rng.normal(0.0003, _DAILY_VOL, size=len(dates))
    return pd.Series(np.log(start_price) + np.cumsum(returns), index=dates)


_MINUTE_COLUMNS = ("ts", "open", "high", "low", "close", "volume", "vwap", "trades")


def _session_minutes(
    seed: int, symbol: str, date: pd.Timestamp, open_: pd.Timestamp, close: pd.Timestamp, anchors: pd.Series
) -> dict[str, np.ndarray]:
    """One session's 1-minute bars (as arrays), from the previous session's close to this session's close."""
    n = int((close - open_) // _MINUTE)
    pos = anchors.index.get_loc(date)
    key = _symbol_key(symbol)
    rng = np.random.default_rng([seed, key, date.toordinal(), 1])
    prev_close = anchors.iloc[pos - 1] if pos > 0 else anchors.iloc[0]
    day_close = anchors.iloc[pos]
    sigma = _DAILY_VOL / np.sqrt(390)
    open_log = prev_close + rng.normal(0.0, _DAILY_VOL / 4)
    steps = rng.normal(0.0, sigma, size=n)
    walk = np.concatenate([[0.0], np.cumsum(steps)])
    frac = np.arange(n + 1) / n
    path = np.round(np.exp(open_log + walk - frac * (walk[-1] - (day_close - open_log))), 2)
    o, c = path[:-1], path[1:]
    h = np.round(np.maximum(o, c) * np.exp(np.abs(rng.normal(0.0, sigma / 2, size=n))), 2)
    low = np.round(np.minimum(o, c) * np.exp(-np.abs(rng.normal(0.0, sigma / 2, size=n))), 2)
    u_shape = 1.0 + 2.0 * (np.linspace(-1.0, 1.0, n) ** 2)
    base_volume = 2_000 + key % 20_000
    volume = np.round(base_volume * u_shape * rng.lognormal(0.0, 0.5, size=n))
    trades = np.maximum(1, np.round(volume / (80 + key % 120))).astype("int64")
    vwap = np.round((h + low + c) / 3.0, 4)
    ts = open_.value + np.arange(n, dtype="int64") * _MINUTE.value
    return {
        "ts": ts,
        "open": o,
        "high": h,
        "low": low,
        "close": c,
        "volume": volume,
        "vwap": vwap,
        "trades": trades,
    }


def _aggregate(minutes: pd.DataFrame, keys: pd.Series | pd.DatetimeIndex) -> pd.DataFrame:
    grouped = minutes.assign(pv=minutes["vwap"] * minutes["volume"]).groupby(keys, sort=True)
    out = grouped.agg(
        open=("open", "first"),
        high=("high", "max"),
        low=("low", "min"),
        close=("close", "last"),
        volume=("volume", "sum"),
        pv=("pv", "sum"),
        trades=("trades", "sum"),
    )
    out["vwap"] = np.round(out.pop("pv") / out["volume"], 4)
    return out.rename_axis("ts").reset_index()


class SyntheticProvider:
    name: ClassVar[str] = "synthetic"
    requests_per_second: ClassVar[float] = 50.0
    max_symbols_per_request: ClassVar[int] = 1
    chunk_period: ClassVar[ChunkPeriod | None] = None
    knows_symbols: ClassVar[bool] = True
    session_hours: ClassVar[SessionHours] = "regular"
    bars_only_when_traded: ClassVar[bool] = False

    def __init__(self, options: SyntheticOptions | None = None, **overrides: object) -> None:
        self.options = options or SyntheticOptions.model_validate(overrides)

    @property
    def adjustment(self) -> Adjustment:
        return Adjustment.RAW  # generated prices have no corporate actions

    def now(self) -> pd.Timestamp:
        """The `now` option, else the real clock: bars closed after it do not exist yet."""
        return pd.Timestamp(self.options.now) if self.options.now is not None else pd.Timestamp.now(tz="UTC")

    def fetch(self, request: FetchRequest) -> pd.DataFrame:
        opts = self.options
        window = (request.start, request.end)
        unknown = [s for s in request.symbols if s in opts.unknown_symbols]
        if unknown:
            raise TerminalProviderError(
                f"unknown symbol {unknown[0]}: check the ticker",
                provider=self.name,
                symbols=unknown,
                window=window,
                http_status=404,
            )
        self._maybe_fail(request)
        frames = [self._bars(symbol, request) for symbol in request.symbols]
        frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
        if frame.empty:
            frame = pd.DataFrame(columns=["symbol", "ts"])
        frame = canonical_frame(frame, provider=self.name, timeframe=request.timeframe.name)
        return self._maybe_corrupt(frame, request)

    def _bars(self, symbol: str, request: FetchRequest) -> pd.DataFrame:
        opts = self.options
        tf = request.timeframe
        now = self.now()
        first_day = request.start.tz_convert("UTC").date()
        last_day = (request.end - pd.Timedelta(microseconds=1)).tz_convert("UTC").date()
        sched = sessions.schedule(first_day, last_day, opts.calendar)
        anchors = _daily_closes(opts.seed, symbol, opts.calendar)
        parts, days = [], []
        for date, open_, close in zip(sched.index, sched["open"], sched["close"], strict=True):
            if tf.intraday or close <= now:
                part = _session_minutes(opts.seed, symbol, date, open_, close, anchors)
                parts.append(part)
                days.append(np.full(len(part["ts"]), pd.Timestamp(date.date(), tz="UTC").value, dtype="int64"))
        if not parts:
            return pd.DataFrame()
        minutes = pd.DataFrame({col: np.concatenate([p[col] for p in parts]) for col in _MINUTE_COLUMNS})
        minutes["ts"] = pd.to_datetime(minutes["ts"], utc=True)
        minutes["session"] = pd.to_datetime(np.concatenate(days), utc=True)
        if not tf.intraday:
            bars = _aggregate(minutes, minutes["session"])
        elif tf.step == _MINUTE:
            bars = minutes.drop(columns="session")
        else:
            bars = _aggregate(minutes, minutes["ts"].dt.floor(tf.step))
        if tf.intraday:
            bars = bars[bars["ts"] + tf.step <= now]
        bars = bars[(bars["ts"] >= request.start) & (bars["ts"] < request.end)]
        return bars.assign(symbol=symbol)

    def _maybe_fail(self, request: FetchRequest) -> None:
        opts = self.options
        if opts.transient_failure_rate <= 0:
            return
        key = (opts.seed, request.symbols, request.timeframe.name, request.start, request.end)
        rng = np.random.default_rng([opts.seed, *map(_symbol_key, request.symbols), _window_key(request.start), 7])
        if rng.random() >= opts.transient_failure_rate:
            return
        with _calls_lock:
            _calls[key] += 1
            attempt = _calls[key]
        if attempt <= opts.transient_failures_per_request:
            raise TransientProviderError(
                f"injected transient failure {attempt} of {opts.transient_failures_per_request} (HTTP 503)",
                provider=self.name,
                symbols=request.symbols,
                window=(request.start, request.end),
                http_status=503,
            )

    def _maybe_corrupt(self, frame: pd.DataFrame, request: FetchRequest) -> pd.DataFrame:
        opts = self.options
        if opts.invalid_chunk_rate <= 0 or frame.empty:
            return frame
        rng = np.random.default_rng([opts.seed, *map(_symbol_key, request.symbols), _window_key(request.start), 11])
        if rng.random() >= opts.invalid_chunk_rate:
            return frame
        frame = frame.copy()
        i = int(rng.integers(len(frame)))
        kind = opts.invalid_kind
        if kind == "high_below_low":
            frame.loc[i, "high"] = frame.loc[i, "low"] * 0.98
        elif kind == "negative_price":
            frame.loc[i, "low"] = -abs(frame.loc[i, "low"])
        elif kind == "null_close":
            frame.loc[i, "close"] = np.nan
        elif kind == "duplicate_ts":
            frame = pd.concat([frame, frame.iloc[[i]]], ignore_index=True)
        elif kind == "off_grid":
            frame.loc[i, "ts"] = frame.loc[i, "ts"] + pd.Timedelta(seconds=30)
        return frame
