"""`synthetic`: deterministic, calendar-aware bars with no network, and knobs to inject failures.

How the bars are made (so that any chunking of a request yields the same bars):
- Each session's daily bar comes from draws seeded by (seed, symbol) only and indexed by the session: a random
  walk of closes from 1990, the open's gap from the previous close, how far high and low reach, the volume.
  A daily request is a few array lookups, however many years it spans.
- Each session's 1-minute bars are a Brownian bridge from that open to that close, seeded by (seed, symbol,
  session date) only, then fitted to the daily bar: first open, last close, highest high, lowest low, volume
  and trades are exactly the day's. Every intraday timeframe is aggregated from those minutes on the UTC grid,
  so a 1h bar is exactly its 60 one-minute bars. A daily bar's vwap is its typical price (high+low+close)/3,
  not the volume-weighted mean of its minutes. Sessions are the calendar's, early closes included.
- Only bars that have closed by `now` exist, as at a real vendor.

Knobs (all seeded, so tests are repeatable):
- `transient_failure_rate`: the share of requests that fail with a TransientProviderError for their first
  `transient_failures_per_request` calls (the count is kept per process, like a flaky server's), then succeed.
- `invalid_chunk_rate`: the share of requests whose answer carries one bad bar, of kind `invalid_kind`.
- `unknown_symbols`: symbols the "vendor" does not know: a TerminalProviderError, never retried.
- `delisted`: symbols the "vendor" stopped listing, each with its last session: no bars after it, and its
  reference data says so (`delistings`).
- `latency_ms`: each request waits this long before it answers (or fails), as a REST vendor's round trip does,
  and the provider then counts as remote (a small run is spread over the task workers, whose waits overlap):
  latency-bound backfills measured on one machine.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import AwareDatetime, Field
from pydantic_settings import SettingsConfigDict

from candleflow import sessions
from candleflow.errors import BadInputError
from candleflow.universes import ReferenceQuery
from providers.base import Capabilities, FetchRequest, FetchResult, Provider
from providers.errors import TerminalProviderError, TransientProviderError
from providers.frames import bar_frame
from providers.settings import ProviderSettings

InvalidKind = Literal["high_below_low", "negative_price", "null_close", "duplicate_ts", "off_grid"]

_MINUTE = pd.Timedelta(minutes=1)
_DAILY_VOL = 0.015
_calls: Counter[tuple[object, ...]] = Counter()
_calls_lock = threading.Lock()


class SyntheticSettings(ProviderSettings):
    model_config = SettingsConfigDict(env_prefix="CANDLEFLOW_SYNTHETIC_")

    seed: int = 0
    calendar: str = sessions.DEFAULT_CALENDAR
    now: AwareDatetime | None = Field(default=None, description="clock for 'bars closed by now' (default: real)")
    transient_failure_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    transient_failures_per_request: int = Field(default=1, ge=1)
    invalid_chunk_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    invalid_kind: InvalidKind = "high_below_low"
    unknown_symbols: tuple[str, ...] = ()
    listed_symbols: int = Field(
        default=500, ge=1, le=100_000, description="how many tickers its reference data lists: S0001, S0002, ..."
    )
    delisted: dict[str, dt.date] = Field(
        default_factory=dict, description="symbols delisted after the given session date: no bars after it"
    )
    latency_ms: float = Field(
        default=0.0,
        ge=0.0,
        le=60_000.0,
        description="each request waits this long before it answers, as a REST vendor's round trip does",
    )


def _symbol_key(symbol: str) -> int:
    return int.from_bytes(hashlib.blake2b(symbol.encode(), digest_size=8).digest(), "big")


def _window_key(start: pd.Timestamp) -> int:
    return int(start.value // 1_000_000_000)


@dataclass(frozen=True)
class _SessionDraws:
    """Per session of the calendar since 1990, the seeded draws a session's daily bar is made of."""

    dates: pd.DatetimeIndex
    close: np.ndarray  # log close: a random walk
    gap: np.ndarray  # log open minus the previous log close
    up: np.ndarray  # how far the high reaches above max(open, close), in log units
    down: np.ndarray  # how far the low reaches below min(open, close)
    activity: np.ndarray  # the session's volume factor


@lru_cache(maxsize=64)
def _session_draws(seed: int, symbol: str, calendar: str) -> _SessionDraws:
    """Every draw of the symbol's daily bars, from one stream seeded by (seed, symbol) and indexed by session, so
    a session's bar does not depend on which other sessions a request holds."""
    dates = sessions.get_calendar(calendar).sessions
    key = _symbol_key(symbol)
    start_price = 20.0 + (key % 48_000) / 100.0
    walk = np.random.default_rng([seed, key, 0])
    close = np.log(start_price) + np.cumsum(walk.normal(0.0003, _DAILY_VOL, size=len(dates)))
    rng = np.random.default_rng([seed, key, 2])
    gap = rng.normal(0.0, _DAILY_VOL / 4, size=len(dates))
    up = np.abs(rng.normal(0.0, _DAILY_VOL / 2, size=len(dates))) + 0.0005
    down = np.abs(rng.normal(0.0, _DAILY_VOL / 2, size=len(dates))) + 0.0005
    activity = rng.lognormal(0.0, 0.3, size=len(dates))
    return _SessionDraws(dates, close, gap, up, down, activity)


def _daily_bars(seed: int, symbol: str, calendar: str, sched: pd.DataFrame) -> dict[str, np.ndarray]:
    """The daily bar of each session in `sched` (rows: session dates; open and close in UTC), as arrays.
    open, high, low and close are rounded to cents; volume and trades are whole numbers."""
    draws = _session_draws(seed, symbol, calendar)
    pos = draws.dates.get_indexer(sched.index)
    prev = draws.close[np.maximum(pos - 1, 0)]
    log_open = prev + draws.gap[pos]
    log_close = draws.close[pos]
    o, c = np.round(np.exp(log_open), 2), np.round(np.exp(log_close), 2)
    h = np.round(np.exp(np.maximum(log_open, log_close) + draws.up[pos]), 2)
    low = np.round(np.exp(np.minimum(log_open, log_close) - draws.down[pos]), 2)
    minutes = ((sched["close"] - sched["open"]) // _MINUTE).to_numpy(dtype="int64")
    key = _symbol_key(symbol)
    volume = np.round((2_000 + key % 20_000) * 1.7 * minutes * draws.activity[pos])
    trades = np.maximum(minutes, np.round(volume / (80 + key % 120))).astype("int64")
    return {
        "open": o,
        "high": np.maximum(h, np.maximum(o, c)),
        "low": np.minimum(low, np.minimum(o, c)),
        "close": c,
        "volume": volume,
        "trades": trades,
        "minutes": minutes,
    }


def _segment_sum(values: np.ndarray, starts: np.ndarray) -> np.ndarray:
    return np.add.reduceat(values, starts) if len(values) else values


def _allocate(total: np.ndarray, weights: np.ndarray, seg: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Split each session's whole `total` over its minutes in proportion to `weights`, at least 1 each, so the
    parts sum exactly to the total (largest remainders get the leftover units)."""
    counts = np.diff(np.append(starts, len(weights)))
    spare = (total - counts).astype("float64")
    share = spare[seg] * weights / _segment_sum(weights, starts)[seg]
    whole = np.floor(share)
    leftover = (spare - _segment_sum(whole, starts)).astype("int64")
    order = np.lexsort((-(share - whole), seg))  # by session, largest remainder first
    rank = np.empty(len(order), dtype="int64")
    rank[order] = np.arange(len(order)) - starts[seg[order]]
    per_segment: np.ndarray = (1 + whole + (rank < leftover[seg])).astype("int64")
    return per_segment


def _minute_bars(seed: int, symbol: str, sched: pd.DataFrame, daily: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The 1-minute bars of each session in `sched`, made to fit its daily bar exactly: the first minute opens at
    the day's open, the last closes at its close, the highest high is the day's high, the lowest low its low, and
    volume and trades sum to the day's. Each session's path is a Brownian bridge seeded by (seed, symbol, date)
    only; all sessions are then shaped at once with array operations."""
    key = _symbol_key(symbol)
    counts = daily["minutes"]
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype("int64")
    total = int(counts.sum())
    steps, ups, downs, weights = (np.empty(total) for _ in range(4))
    for i, (date, n) in enumerate(zip(sched.index, counts, strict=True)):
        rng = np.random.default_rng([seed, key, date.toordinal(), 1])
        s = slice(starts[i], starts[i] + n)
        draws = rng.standard_normal(3 * n)
        steps[s], ups[s], downs[s] = draws[:n], draws[n : 2 * n], draws[2 * n :]
        weights[s] = rng.lognormal(0.0, 0.5, size=n)
    seg = np.repeat(np.arange(len(counts)), counts)
    j = np.arange(total) - starts[seg]
    n = counts[seg].astype("float64")
    sigma = _DAILY_VOL / np.sqrt(390)
    walk_close = np.cumsum(steps * sigma)
    walk_close -= np.concatenate([[0.0], walk_close])[starts][seg]  # restart the walk at each session
    walk_open = walk_close - steps * sigma
    drift_total = walk_close[starts + counts - 1][seg]
    log_o, log_c = np.log(daily["open"])[seg], np.log(daily["close"])[seg]
    path_open = log_o + walk_open - j / n * drift_total + j / n * (log_c - log_o)
    path_close = log_o + walk_close - (j + 1) / n * drift_total + (j + 1) / n * (log_c - log_o)
    po, pc = np.exp(path_open), np.exp(path_close)
    ph = np.maximum(po, pc) * np.exp(np.abs(ups) * sigma / 2)
    pl = np.minimum(po, pc) * np.exp(-np.abs(downs) * sigma / 2)
    # A monotone map per session that keeps its open and close and stretches the path's extremes onto the day's
    # high and low: order within every minute (low <= open, close <= high) survives it and the rounding after it.
    top = np.maximum(daily["open"], daily["close"])
    bottom = np.minimum(daily["open"], daily["close"])
    reach_up = np.maximum.reduceat(ph, starts) - top
    reach_down = bottom - np.minimum.reduceat(pl, starts)
    scale_up = np.divide(daily["high"] - top, reach_up, out=np.zeros_like(top), where=reach_up > 0)
    scale_down = np.divide(bottom - daily["low"], reach_down, out=np.zeros_like(top), where=reach_down > 0)

    def fit(x: np.ndarray) -> np.ndarray:
        t, b = top[seg], bottom[seg]
        x = np.where(x > t, t + (x - t) * scale_up[seg], x)
        return np.round(np.where(x < b, b - (b - x) * scale_down[seg], x), 2)

    o, c, h, low = fit(po), fit(pc), fit(ph), fit(pl)
    o[starts], c[starts + counts - 1] = daily["open"], daily["close"]
    h, low = np.minimum(h, daily["high"][seg]), np.maximum(low, daily["low"][seg])
    for short in np.flatnonzero(np.maximum.reduceat(h, starts) < daily["high"]):  # rounding fell short: lift it
        s = slice(starts[short], starts[short] + counts[short])
        h[s][np.argmax(h[s])] = daily["high"][short]
    for short in np.flatnonzero(np.minimum.reduceat(low, starts) > daily["low"]):
        s = slice(starts[short], starts[short] + counts[short])
        low[s][np.argmin(low[s])] = daily["low"][short]
    u_shape = 1.0 + 2.0 * (2.0 * (j + 0.5) / n - 1.0) ** 2
    volume = _allocate(daily["volume"].astype("int64"), u_shape * weights, seg, starts).astype("float64")
    trades = _allocate(daily["trades"], volume, seg, starts)
    ts = sched["open"].to_numpy(dtype="datetime64[ns]").astype("int64")[seg] + j * _MINUTE.value
    return {
        "ts": ts,
        "open": o,
        "high": h,
        "low": low,
        "close": c,
        "volume": volume,
        "vwap": np.round((h + low + c) / 3.0, 4),
        "trades": trades,
    }


def _aggregate(minutes: dict[str, np.ndarray], step_ns: int) -> dict[str, np.ndarray]:
    """Minutes (sorted by time) as bars of `step_ns` on the UTC grid: first open, last close, extreme high and
    low, summed volume and trades, volume-weighted vwap."""
    bucket = minutes["ts"] // step_ns
    starts = np.flatnonzero(np.concatenate([[True], bucket[1:] != bucket[:-1]]))
    ends = np.append(starts[1:], len(bucket)) - 1
    volume = np.add.reduceat(minutes["volume"], starts)
    return {
        "ts": bucket[starts] * step_ns,
        "open": minutes["open"][starts],
        "high": np.maximum.reduceat(minutes["high"], starts),
        "low": np.minimum.reduceat(minutes["low"], starts),
        "close": minutes["close"][ends],
        "volume": volume,
        "vwap": np.round(np.add.reduceat(minutes["vwap"] * minutes["volume"], starts) / volume, 4),
        "trades": np.add.reduceat(minutes["trades"], starts),
    }


_VALUE_COLUMNS = ("open", "high", "low", "close", "volume", "vwap", "trades")


class SyntheticProvider(Provider[SyntheticSettings]):
    """Raw prices (generated prices have no corporate actions), regular hours of its calendar."""

    name = "synthetic"
    settings_class = SyntheticSettings
    # Bars are computed here, in about 5 ms a request: no vendor to spare. The limit exists (so runs on synthetic
    # exercise the shared rate limit like any provider's) but sits above what two cores can ask of it.
    capabilities = Capabilities(
        requests_per_second=1000.0,
        remote=False,
        lists_symbols=True,
        every_symbol=("1m", "5m", "15m", "1h", "1d"),  # its `listed_symbols`, as a vendor's day file holds its tickers
        tells_delistings=True,
    )

    def __init__(self, settings: SyntheticSettings | None = None, **options: object) -> None:
        super().__init__(settings, **options)
        if self.settings.latency_ms > 0:  # its requests wait like a vendor's: spread a run over the task workers
            self.capabilities = replace(self.capabilities, remote=True)

    def _wait(self) -> None:
        if self.settings.latency_ms > 0:
            time.sleep(self.settings.latency_ms / 1000.0)

    def now(self) -> pd.Timestamp:
        """The `now` option, else the real clock: bars closed after it do not exist yet."""
        return pd.Timestamp(self.settings.now) if self.settings.now is not None else pd.Timestamp.now(tz="UTC")

    def fetch(self, request: FetchRequest) -> FetchResult:
        self._wait()
        return FetchResult(self._frame(request))

    def list_symbols(self, query: ReferenceQuery, pace: Callable[[int], None] | None = None) -> list[str]:
        """Its reference data: `listed_symbols` common stocks S0001, S0002, ..., all active, on no exchange in
        particular (so a universe of any size can be made offline)."""
        query.without_parents(self.name)
        if query.market != "stocks" or query.type not in (None, "CS") or query.exchange is not None:
            raise BadInputError(
                f"provider synthetic lists only common stocks (market=stocks, type CS, no exchange), not "
                f"{query.describe()}"
            )
        width = max(4, len(str(self.settings.listed_symbols)))
        return [f"S{i:0{width}d}" for i in range(1, self.settings.listed_symbols + 1)]

    def delistings(self, symbols: Sequence[str], pace: Callable[[int], None] | None = None) -> dict[str, dt.date]:
        """The `delisted` option's symbols among `symbols`, with their last session."""
        self._wait()
        return {s: self.settings.delisted[s] for s in symbols if s in self.settings.delisted}

    def _frame(self, request: FetchRequest) -> pd.DataFrame:
        opts = self.settings
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
        tickers = self.list_symbols(ReferenceQuery()) if request.every else list(request.symbols)
        parts = [(symbol, self._bars(symbol, request)) for symbol in tickers]
        ts = np.concatenate([bars["ts"] for _, bars in parts])
        symbols = np.concatenate([np.full(len(bars["ts"]), symbol, dtype=object) for symbol, bars in parts])
        values = {col: np.concatenate([bars[col] for _, bars in parts]) for col in _VALUE_COLUMNS}
        frame = bar_frame(self.name, request.timeframe.name, symbols, ts, values)
        if len(tickers) > 1:  # the canonical order: by symbol, then time
            frame = frame.sort_values(["symbol", "ts"], kind="stable").reset_index(drop=True)
        return self._maybe_corrupt(frame, request)

    def _bars(self, symbol: str, request: FetchRequest) -> dict[str, np.ndarray]:
        """The symbol's bars in the request's window as arrays: ts (int64 ns, UTC) and the value columns."""
        opts = self.settings
        tf = request.timeframe
        now = self.now()
        first_day = request.start.tz_convert("UTC").date()
        last_day = (request.end - pd.Timedelta(microseconds=1)).tz_convert("UTC").date()
        if symbol in opts.delisted:
            last_day = min(last_day, opts.delisted[symbol])
        if last_day < first_day:
            return {"ts": np.empty(0, dtype="int64"), **{col: np.empty(0) for col in _VALUE_COLUMNS}}
        sched = sessions.schedule(first_day, last_day, opts.calendar)
        # only sessions that have begun (intraday) or closed (daily) by `now` have bars
        sched = sched[sched["open"] < now] if tf.intraday else sched[sched["close"] <= now]
        if sched.empty:
            return {"ts": np.empty(0, dtype="int64"), **{col: np.empty(0) for col in _VALUE_COLUMNS}}
        daily = _daily_bars(opts.seed, symbol, opts.calendar, sched)
        if not tf.intraday:
            bars = {k: v for k, v in daily.items() if k != "minutes"}
            bars["vwap"] = np.round((bars["high"] + bars["low"] + bars["close"]) / 3.0, 4)
            bars["ts"] = pd.DatetimeIndex(sched.index).as_unit("ns").asi8
        else:
            bars = _minute_bars(opts.seed, symbol, sched, daily)
            if tf.step != _MINUTE:
                bars = _aggregate(bars, tf.step.value)
            last_open = bars["ts"] + tf.step.value
            keep = last_open <= now.value  # only bars that have closed
            bars = {k: v[keep] for k, v in bars.items()}
        keep = (bars["ts"] >= request.start.value) & (bars["ts"] < request.end.value)
        return {k: v[keep] for k, v in bars.items()}

    def _maybe_fail(self, request: FetchRequest) -> None:
        opts = self.settings
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
        opts = self.settings
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
