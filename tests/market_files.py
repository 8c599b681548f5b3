"""Whole-market flat files at the vendor's real width, generated: every ticker of a US stocks day (~11,000) in a
day file, and a minute file of about two million rows, in the exact layout and columns of Polygon's files
(`ticker,volume,open,close,high,low,window_start,transactions`, gzip, `window_start` in ns). Deterministic (a
date and a seed give the same bytes) and fast (numpy and pyarrow, no Python loop over rows), so tests and
`make bench-e2e` can serve them from the local S3 server.

Tickers are made as the vendor writes them: plain ones, class shares with a dot (BRK.A), lower-case markers of
preferreds and warrants (BACpB, ACMRw), and some tickers are absent on some days (listed later, halted)."""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import io
import string
from functools import cache

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

COLUMNS = ("ticker", "volume", "open", "close", "high", "low", "window_start", "transactions")
MARKET_TICKERS = 11_000  # about every US stock ticker of a day file
_EXTENDED_MINUTES = 16 * 60  # 04:00-20:00 New York: the minute file's hours


@cache
def market_tickers(count: int = MARKET_TICKERS) -> tuple[str, ...]:
    """`count` distinct tickers, sorted, in the vendor's spellings (about 1% class shares, preferreds or
    warrants), the same for every call."""
    rng = np.random.default_rng(20240101)
    letters = np.array(list(string.ascii_uppercase))
    found: dict[str, None] = {}
    while len(found) < count:
        lengths = rng.choice([1, 2, 3, 4, 5], size=count, p=[0.002, 0.03, 0.25, 0.5, 0.218])
        for n in lengths:
            ticker = "".join(rng.choice(letters, size=int(n)))
            kind = rng.random()
            if kind < 0.004:
                ticker += "." + str(rng.choice(letters[:2]))  # BRK.A, BRK.B
            elif kind < 0.008:
                ticker += "p" + str(rng.choice(letters[:6]))  # a preferred: BACpB
            elif kind < 0.010:
                ticker += "w"  # a warrant
            found.setdefault(ticker)
            if len(found) == count:
                break
    return tuple(sorted(found))


def option_tickers(underlyings: tuple[str, ...] = ("AAPL", "MSFT", "SPY"), strikes: int = 50) -> tuple[str, ...]:
    """OPRA contract tickers as the vendor writes them: `O:` + underlying + expiry YYMMDD + C or P + strike x 1000
    in eight digits (O:AAPL240119C00150000), several expiries, both sides."""
    out = []
    for underlying in underlyings:
        for expiry in ("240119", "240216", "240315"):
            for side in "CP":
                out += [f"O:{underlying}{expiry}{side}{(100 + 5 * k) * 1000:08d}" for k in range(strikes)]
    return tuple(sorted(out))


def options_day_table(date: dt.date, *, seed: int = 0) -> pa.Table:
    """An options day file (`us_options_opra/day_aggs_v1`): a bar for each contract that traded that day."""
    names = np.array(option_tickers(), dtype=object)
    rng = np.random.default_rng(_seed(date, seed, "options"))
    traded = np.flatnonzero(rng.random(len(names)) < 0.8)
    values = _prices(len(traded), rng.lognormal(1.0, 1.0, len(traded)).clip(0.05, 200), rng)
    values["volume"] = rng.integers(1, 20_000, len(traded))
    start = np.full(len(traded), _new_york_midnight_ns(date), dtype=np.int64)
    return _table(names[traded], values, start, rng.integers(1, 500, len(traded)))


def _seed(date: dt.date, seed: int, what: str) -> int:
    digest = hashlib.blake2b(f"{what}|{date.isoformat()}|{seed}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def _listed(date: dt.date, tickers: int, seed: int) -> np.ndarray:
    """Which tickers trade on `date`: about 98% of them (the rest not listed yet, halted or delisted)."""
    rng = np.random.default_rng(_seed(date, seed, "listed"))
    return np.flatnonzero(rng.random(tickers) < 0.98)


def _prices(rows: int, base: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Bars around `base` that a validator accepts: low <= open, close <= high; volume and trades positive."""
    open_ = np.round(base * (1 + rng.normal(0, 0.01, rows)), 4)
    close = np.round(base * (1 + rng.normal(0, 0.01, rows)), 4)
    high = np.round(np.maximum(open_, close) * (1 + np.abs(rng.normal(0, 0.004, rows))), 4)
    low = np.round(np.minimum(open_, close) * (1 - np.abs(rng.normal(0, 0.004, rows))), 4)
    volume = rng.integers(100, 5_000_000, rows)
    return {"open": open_, "close": close, "high": high, "low": low, "volume": volume}


def _base_prices(tickers: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed + 7).lognormal(3.0, 1.0, tickers).clip(0.5, 4_000)


def _new_york_midnight_ns(date: dt.date) -> int:
    return int(pd.Timestamp(date, tz="America/New_York").tz_convert("UTC").value)


def day_table(date: dt.date, *, tickers: int = MARKET_TICKERS, seed: int = 0) -> pa.Table:
    """A day file's rows for `date`: one bar per listed ticker, stamped at midnight New York."""
    names = np.array(market_tickers(tickers), dtype=object)
    listed = _listed(date, tickers, seed)
    rng = np.random.default_rng(_seed(date, seed, "day"))
    values = _prices(len(listed), _base_prices(tickers, seed)[listed], rng)
    start = np.full(len(listed), _new_york_midnight_ns(date), dtype=np.int64)
    return _table(names[listed], values, start, rng.integers(1, 60_000, len(listed)))


def minute_table(date: dt.date, *, tickers: int = MARKET_TICKERS, seed: int = 0, rows: int = 2_000_000) -> pa.Table:
    """A minute file's rows for `date`: about `rows` bars over the extended hours (04:00-20:00 New York), the
    liquid tickers trading every minute and the others some minutes (a minute without trades has no bar)."""
    names = np.array(market_tickers(tickers), dtype=object)
    listed = _listed(date, tickers, seed)
    rng = np.random.default_rng(_seed(date, seed, "minute"))
    # minutes traded per ticker: heavy-tailed, scaled so the file holds about `rows` bars
    weights = rng.pareto(1.2, len(listed)) + 0.05
    scale = rows / weights.sum()
    for _ in range(8):  # the busiest tickers are capped at every minute: scale the rest up to make `rows`
        minutes = np.clip(np.round(weights * scale), 1, _EXTENDED_MINUTES).astype(np.int64)
        scale *= rows / max(int(minutes.sum()), 1)
    total = int(minutes.sum())
    owner = np.repeat(np.arange(len(listed)), minutes)
    # each ticker's minutes: distinct, sorted offsets from 04:00 (the first `n` of a shuffled day, for speed:
    # a random key per row, then sorted within the ticker)
    offsets = np.empty(total, dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(minutes)[:-1]])
    keys = rng.random(_EXTENDED_MINUTES)
    order = np.argsort(keys)
    for n in np.unique(minutes):  # tickers sharing a count of minutes share one draw: a few hundred groups
        chosen = np.sort(order[:n])
        which = np.flatnonzero(minutes == n)
        offsets[(starts[which][:, None] + np.arange(n)[None, :]).ravel()] = np.tile(chosen, len(which))
    # minutes from 04:00 New York of that day (its UTC offset on a DST change day too), as the vendor stamps them
    start_ns = pd.Timestamp(date, tz="America/New_York") + pd.Timedelta(hours=4)
    open_ns = int(start_ns.tz_convert("UTC").value)
    values = _prices(total, _base_prices(tickers, seed)[listed][owner], rng)
    window_start = open_ns + offsets * 60_000_000_000
    return _table(names[listed][owner], values, window_start, rng.integers(1, 400, total))


def _table(tickers: np.ndarray, values: dict[str, np.ndarray], start: np.ndarray, trades: np.ndarray) -> pa.Table:
    return pa.table(
        {
            "ticker": pa.array(tickers, pa.string()),
            "volume": pa.array(values["volume"], pa.int64()),
            "open": values["open"],
            "close": values["close"],
            "high": values["high"],
            "low": values["low"],
            "window_start": pa.array(start, pa.int64()),
            "transactions": pa.array(trades, pa.int64()),
        }
    )


def gzip_csv(table: pa.Table) -> bytes:
    """The table as the vendor's file: a CSV with a header line, gzip-compressed."""
    sink = io.BytesIO()
    pacsv.write_csv(table, sink, pacsv.WriteOptions(include_header=True, quoting_style="none"))
    return gzip.compress(sink.getvalue(), compresslevel=1, mtime=0)  # the same bytes every time


def day_file(date: dt.date, *, tickers: int = MARKET_TICKERS, seed: int = 0) -> bytes:
    return gzip_csv(day_table(date, tickers=tickers, seed=seed))


def minute_file(date: dt.date, *, tickers: int = MARKET_TICKERS, seed: int = 0, rows: int = 2_000_000) -> bytes:
    return gzip_csv(minute_table(date, tickers=tickers, seed=seed, rows=rows))


def as_bars(table: pa.Table, *, daily: bool, stored: bool = False) -> pd.DataFrame:
    """What candleflow should store from the file's rows: symbol, ts (daily: the session date at 00:00 UTC) and
    the values, sorted, for comparing with the warehouse; with `stored`, every column of `bars` but the series'
    provider and timeframe (vwap empty, trades from `transactions`), as a COPY of them takes it."""
    frame = table.to_pandas()
    ts = pd.to_datetime(frame["window_start"], unit="ns", utc=True)
    if daily:
        ts = ts.dt.tz_convert("America/New_York").dt.normalize().dt.tz_localize(None).dt.tz_localize("UTC")
    out = pd.DataFrame(
        {
            "symbol": frame["ticker"],
            "ts": ts,
            "open": frame["open"],
            "high": frame["high"],
            "low": frame["low"],
            "close": frame["close"],
            "volume": frame["volume"].astype("float64"),
        }
    )
    if stored:
        out["vwap"] = np.nan
        out["trades"] = frame["transactions"].astype("Int64")
    return out.sort_values(["symbol", "ts"]).reset_index(drop=True)
