"""`csv`: bars from a directory of per-symbol files the user already holds. No network.

Where it looks, for symbol S at timeframe T (first match wins; extensions .csv, .csv.gz, .parquet):
  DIR/T/S.ext, then DIR/S_T.ext, then (daily bars only) DIR/S.ext
DIR is the `directory` option, else $CANDLEFLOW_CSV_DIR.

Columns, case-insensitive, any row order:
- Yahoo style: Date, Open, High, Low, Close, Adj Close, Volume (daily; `Date` is the session date).
- Plain: one of ts/timestamp/datetime/date/time, then open, high, low, close, volume, optional vwap, trades.
Timestamps without a zone are read in the `timezone` option (default UTC); daily bars are keyed by their
session date (in `timezone`) at 00:00 UTC, whatever the time of day written. Prices are as the file has them
(`adjusted=false`, the default); with `adjusted=true` and an Adj Close column, open/high/low/close are scaled by
Adj Close / Close, volume is left as is, and vwap is dropped (it would not be adjusted).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, field_validator

from candleflow.errors import BadInputError
from candleflow.model import Adjustment
from candleflow.timeframes import ChunkPeriod, Timeframe
from providers.base import FetchRequest, canonical_frame
from providers.errors import TerminalProviderError

EXTENSIONS = (".csv", ".csv.gz", ".parquet")
DIR_ENV = "CANDLEFLOW_CSV_DIR"
_TIME_COLUMNS = ("ts", "timestamp", "datetime", "date", "time")


class CsvOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    directory: str | None = None
    timezone: str = "UTC"
    adjusted: bool = False
    # A name for this collection of files: its bars are stored as `csv:<source>`, apart from other collections
    # of the same symbols (without it, every csv collection shares `csv`).
    source: str | None = None

    @field_validator("source")
    @classmethod
    def _plain_source(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,23}", value):
            raise ValueError(f"source {value!r}: use 1-24 of a-z 0-9 _ - (for example quandl)")
        return value

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}: use an IANA name such as America/New_York") from None
        return value


class CsvProvider:
    name: ClassVar[str] = "csv"
    requests_per_second: ClassVar[float] = 1000.0
    max_symbols_per_request: ClassVar[int] = 1
    chunk_period: ClassVar[ChunkPeriod | None] = None
    knows_symbols: ClassVar[bool] = True
    bars_only_when_traded: ClassVar[bool] = False

    def __init__(self, options: CsvOptions | None = None, **overrides: object) -> None:
        self.options = options or CsvOptions.model_validate(overrides)

    @property
    def stored_as(self) -> str:
        """The provider key its bars are stored under: `csv`, or `csv:<source>`."""
        return f"{self.name}:{self.options.source}" if self.options.source else self.name

    @property
    def adjustment(self) -> Adjustment:
        return Adjustment.ADJUSTED if self.options.adjusted else Adjustment.RAW

    def directory(self) -> Path:
        raw = self.options.directory or os.environ.get(DIR_ENV)
        if not raw:
            raise TerminalProviderError(
                f"no directory: set {DIR_ENV} or pass --option directory=PATH", provider=self.name
            )
        path = Path(raw).expanduser()
        if not path.is_dir():
            raise TerminalProviderError(
                f"directory {path} does not exist: fix {DIR_ENV} or --option directory=PATH", provider=self.name
            )
        return path

    def check_inputs(self, symbols: Sequence[str], timeframes: Sequence[Timeframe]) -> None:
        """The directory exists and every symbol's files would lie inside it (a symbol may hold `.` and `/`)."""
        try:
            for symbol in symbols:
                for timeframe in timeframes:
                    self._stems(symbol, timeframe.name)
        except TerminalProviderError as exc:
            raise BadInputError(f"csv: {exc.args[0]}") from None

    def _stems(self, symbol: str, timeframe: str) -> list[Path]:
        """Where `symbol`'s file may be, refusing any path that resolves outside the directory."""
        root = self.directory().resolve()
        stems = [root / timeframe / symbol, root / f"{symbol}_{timeframe}"]
        if timeframe == "1d":
            stems.append(root / symbol)
        for stem in stems:
            if not stem.resolve().is_relative_to(root):
                raise TerminalProviderError(
                    f"symbol {symbol!r} points outside the directory {root}: use a plain symbol such as AAPL or BRK.B",
                    provider=self.name,
                    symbols=[symbol],
                )
        return stems

    def find_file(self, symbol: str, timeframe: str) -> Path | None:
        for stem in self._stems(symbol, timeframe):
            for ext in EXTENSIONS:
                candidate = stem.with_name(stem.name + ext)
                if candidate.is_file() and candidate.resolve().is_relative_to(self.directory().resolve()):
                    return candidate
        return None

    def fetch(self, request: FetchRequest) -> pd.DataFrame:
        window = (request.start, request.end)
        frames = []
        for symbol in request.symbols:
            path = self.find_file(symbol, request.timeframe.name)
            if path is None:
                raise TerminalProviderError(
                    f"no file for {symbol} at {request.timeframe.name} in {self.directory()} "
                    f"(looked for {request.timeframe.name}/{symbol}, {symbol}_{request.timeframe.name}"
                    f"{', ' + symbol if request.timeframe.name == '1d' else ''} with {', '.join(EXTENSIONS)})",
                    provider=self.name,
                    symbols=[symbol],
                    window=window,
                )
            frame = self._read(path, symbol, request)
            frames.append(frame[(frame["ts"] >= request.start) & (frame["ts"] < request.end)])
        combined = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["symbol", "ts"])
        return canonical_frame(combined, provider=self.stored_as, timeframe=request.timeframe.name)

    def _read(self, path: Path, symbol: str, request: FetchRequest) -> pd.DataFrame:
        try:
            raw = pd.read_parquet(path) if path.name.endswith(".parquet") else pd.read_csv(path)
        except (OSError, ValueError, pd.errors.ParserError) as exc:
            raise TerminalProviderError(f"cannot read {path}: {exc}", provider=self.name, symbols=[symbol]) from None
        columns = {str(c).strip().lower().replace("_", " "): c for c in raw.columns}
        time_column = next((columns[c] for c in _TIME_COLUMNS if c in columns), None)
        missing = [c for c in ("open", "high", "low", "close", "volume") if c not in columns]
        if time_column is None or missing:
            what = ", ".join(([] if time_column else ["a time column (Date, ts, timestamp, ...)"]) + missing)
            raise TerminalProviderError(f"{path} lacks {what}", provider=self.name, symbols=[symbol])
        try:
            ts = pd.to_datetime(raw[time_column], utc=False, format="mixed")
        except (ValueError, TypeError) as exc:
            raise TerminalProviderError(
                f"{path}: unreadable {time_column}: {exc}", provider=self.name, symbols=[symbol]
            ) from None
        if ts.dt.tz is None:
            ts = ts.dt.tz_localize(self.options.timezone)
        if request.timeframe.intraday:
            ts = ts.dt.tz_convert("UTC")
        else:  # the session date in the file's zone, at 00:00 UTC, whatever the time of day written
            ts = ts.dt.tz_convert(self.options.timezone).dt.tz_localize(None).dt.normalize().dt.tz_localize("UTC")
        out = pd.DataFrame({"symbol": symbol, "ts": ts})
        for name in ("open", "high", "low", "close", "volume", "vwap", "trades"):
            if name in columns:
                out[name] = pd.to_numeric(raw[columns[name]], errors="coerce")
        if self.options.adjusted:
            if "adj close" not in columns:
                raise TerminalProviderError(
                    f"{path} has no Adj Close column for adjusted=true", provider=self.name, symbols=[symbol]
                )
            factor = pd.to_numeric(raw[columns["adj close"]], errors="coerce") / out["close"]
            for name in ("open", "high", "low", "close"):
                out[name] = (out[name] * factor).round(6)
            out["vwap"] = np.nan  # a vendor vwap is not adjusted with the prices
        return out
