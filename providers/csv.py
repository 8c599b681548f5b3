"""`csv`: bars from a directory of files the user already holds. No network.

Where it looks, for symbol S at timeframe T (first match wins; extensions .csv, .csv.gz, .parquet):
  DIR/T/S.ext, then DIR/S_T.ext, then (daily bars only) DIR/S.ext; or, with the `file` option, one file in DIR
  holding every symbol. DIR is the `directory` option, else $CANDLEFLOW_CSV_DIR (`CsvSettings`). A symbol may not
  resolve outside DIR.

Columns, any case (`_` and `-` read as spaces), any row order; see providers/csv_columns.py for every accepted name:
- time: one timestamp column (ts, timestamp, datetime), or Date and Time columns (combined), or a Date alone;
- open, high, low, close (or Last), volume; optional vwap, trades (or transactions), Adj Close, Adj Volume;
- a Ticker or Symbol column: the file holds many tickers and the requested symbol's rows are kept.
Other columns are ignored; when the result cannot be right (rows sharing a timestamp), the error says which
columns were used and which ignored.
Times are read one way per column, never row by row (providers/csv_times.py): ISO dates as such; dd/mm/yyyy or
mm/dd/yyyy by the column's values (a first field above 12 means day first, a second field above 12 month first),
and a column where both orders read is refused until `dayfirst=true|false` or `date_format=%d/%m/%Y` (strftime;
with separate Date and Time columns, the Date's) says which; numbers as dates written as digits (20240102) or as
epoch times whose unit their magnitude tells (`epoch_unit=s|ms|us|ns` says it), refused when no unit puts them
between 1971 and five years from now. A row whose time is blank or unreadable, skipped by a DST change, or
repeated by one without its twin (a repeated hour is read in file order, summer time first) keeps no time (NaT)
and its text in `as_written`, in the chunk of its nearest readable row (for a DST time, the chunk of its wall
time): validation quarantines it (`ts not null`) and the run counts it. A file whose bars are mostly spaced
otherwise than the timeframe asked for (5-minute bars in 1m/, daily bars at 1h, minutes at 1d) is refused.
Timestamps without a zone are read in the `timezone` option (default UTC); `label=end` for intraday bars stamped
with their end time. Daily bars are keyed by their session date (in `timezone`) at 00:00 UTC, whatever the time
of day written. Prices are as the file has them (`adjusted=false`, the default); with `adjusted=true` and an
Adj Close column, open/high/low/close are scaled by Adj Close / Close and vwap is dropped; volume comes from an
Adj Volume column if there is one, is divided by the same factor with `adjust_volume=true`, and is otherwise
left as written. `source=NAME` stores the bars as `csv:NAME`, apart from other collections of the same symbols.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import pandas as pd
from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from candleflow.errors import BadInputError
from candleflow.model import Adjustment
from candleflow.sessions import SessionHours
from candleflow.timeframes import TIMEFRAMES, Timeframe
from providers.base import SOURCE_PATTERN, SOURCE_RULE, Capabilities, FetchRequest, FetchResult, Provider
from providers.csv_columns import as_written, map_columns, read_rows, used_and_ignored
from providers.csv_times import EpochUnit, bar_spacing, localize, nearest_readable, parse_times, spacing_name
from providers.errors import TerminalProviderError
from providers.frames import canonical_frame
from providers.settings import ProviderSettings

EXTENSIONS = (".csv", ".csv.gz", ".parquet")
# The column a row whose time cannot be read carries into the quarantine: the row as the file wrote it.
AS_WRITTEN = "as_written"


class CsvSettings(ProviderSettings):
    model_config = SettingsConfigDict(env_prefix="CANDLEFLOW_CSV_")

    directory: str | None = Field(default=None, validation_alias="CANDLEFLOW_CSV_DIR")
    timezone: str = "UTC"
    adjusted: bool = False
    # Intraday bars labelled by their end time (09:31 for the bar of 09:30-09:31) instead of their open time.
    label: Literal["start", "end"] = "start"
    # Intraday bars of the regular session only, or also pre- and post-market (04:00-20:00 in the calendar's zone).
    hours: SessionHours = "regular"
    # adjusted=true and no Adj Volume column: also scale volume by Close / Adj Close (split-adjusted share counts).
    adjust_volume: bool = False
    # One file in the directory holding every symbol (with a Ticker or Symbol column), instead of a file each.
    file: str | None = None
    # A name for this collection of files: its bars are stored as `csv:<source>`, apart from other collections
    # of the same symbols (without it, every csv collection shares `csv`).
    source: str | None = None
    # dd/mm (true) or mm/dd (false) dates, for a column where no first or second field above 12 tells.
    dayfirst: bool | None = None
    # The time column's strftime format (e.g. %d/%m/%Y %H:%M); with separate Date and Time columns, the Date's.
    date_format: str | None = None
    # Numbers in the time column are epoch times in this unit; by default their magnitude tells.
    epoch_unit: EpochUnit | None = None

    @field_validator("date_format")
    @classmethod
    def _a_format(cls, value: str | None) -> str | None:
        if value is not None and "%" not in value:
            raise ValueError(f"date_format {value!r} has no % directive: write it like %d/%m/%Y")
        return value

    @field_validator("source")
    @classmethod
    def _plain_source(cls, value: str | None) -> str | None:
        if value is not None and not SOURCE_PATTERN.fullmatch(value):
            raise ValueError(f"source {value!r}: {SOURCE_RULE}")
        return value

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}: use an IANA name such as America/New_York") from None
        return value


class CsvProvider(Provider[CsvSettings]):
    """Prices as the files have them (`adjusted=true` scales them by Adj Close); the hours of the `hours` option."""

    name = "csv"
    settings_class = CsvSettings
    capabilities = Capabilities(requests_per_second=1000.0, named_sources=True, remote=False)

    def __init__(self, settings: CsvSettings | None = None, **options: Any) -> None:
        super().__init__(settings, **options)
        self.capabilities = replace(self.capabilities, session_hours=self.settings.hours)

    @property
    def stored_as(self) -> str:
        """The provider key its bars are stored under: `csv`, or `csv:<source>`."""
        return f"{self.name}:{self.settings.source}" if self.settings.source else self.name

    @property
    def adjustment(self) -> Adjustment:
        return Adjustment.ADJUSTED if self.settings.adjusted else Adjustment.RAW

    def directory(self) -> Path:
        raw, variable = self.settings.directory, self.settings.variable("directory")
        if not raw:
            raise TerminalProviderError(
                f"no directory: set {variable} or pass --option directory=PATH", provider=self.name
            )
        path = Path(raw).expanduser()
        if not path.is_dir():
            raise TerminalProviderError(
                f"directory {path} does not exist: fix {variable} or --option directory=PATH", provider=self.name
            )
        return path

    def probe(self) -> str:
        """The directory exists and can be listed."""
        path = self.directory()
        try:
            files = sum(1 for _ in path.iterdir())
        except OSError as exc:
            raise TerminalProviderError(
                f"directory {path} cannot be listed: {exc.strerror}", provider=self.name
            ) from None
        return f"directory {path} holds {files} files"

    def check_inputs(self, symbols: Sequence[str], timeframes: Sequence[Timeframe]) -> None:
        """The directory exists and every symbol's files would lie inside it (a symbol may hold `.` and `/`)."""
        try:
            if self.settings.file and self.find_file("", "") is None:
                raise TerminalProviderError(
                    f"file {self.settings.file!r} does not exist in {self.directory()}: fix --option file=NAME",
                    provider=self.name,
                )
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
        if self.settings.file:
            root = self.directory().resolve()
            path = (root / self.settings.file).resolve()
            if not path.is_relative_to(root):
                raise TerminalProviderError(
                    f"file {self.settings.file!r} lies outside the directory {root}", provider=self.name
                )
            return path if path.is_file() else None
        for stem in self._stems(symbol, timeframe):
            for ext in EXTENSIONS:
                candidate = stem.with_name(stem.name + ext)
                if candidate.is_file() and candidate.resolve().is_relative_to(self.directory().resolve()):
                    return candidate
        return None

    def fetch(self, request: FetchRequest) -> FetchResult:
        return FetchResult(self._bars(request))

    def _bars(self, request: FetchRequest) -> pd.DataFrame:
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
            in_window = (frame["window_time"] >= request.start) & (frame["window_time"] < request.end)
            frames.append(frame[in_window].drop(columns="window_time"))
        combined = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["symbol", "ts"])
        if AS_WRITTEN not in combined.columns:
            return canonical_frame(combined, provider=self.stored_as, timeframe=request.timeframe.name)
        # rows without a readable time travel with their text as written, which the quarantine shows
        combined = combined.sort_values(["symbol", "ts"], kind="stable", na_position="last", ignore_index=True)
        bars = canonical_frame(combined, provider=self.stored_as, timeframe=request.timeframe.name)
        return bars.assign(**{AS_WRITTEN: combined[AS_WRITTEN].to_numpy()})

    def _read(self, path: Path, symbol: str, request: FetchRequest) -> pd.DataFrame:
        raw = read_rows(path)
        where = f"{path}"
        mapped = map_columns(raw.columns)
        missing = [c for c in ("open", "high", "low", "close", "volume") if c not in mapped]
        has_time = any(k in mapped for k in ("ts", "date", "time"))
        if not has_time or missing:
            what = ", ".join(([] if has_time else ["a time column (Date, Time, ts, timestamp, ...)"]) + missing)
            raise TerminalProviderError(
                f"{where} lacks {what} ({used_and_ignored(raw.columns, mapped)})", provider=self.name, symbols=[symbol]
            )
        if "symbol" in mapped:  # a file of many tickers: keep the requested one
            tickers = raw[mapped["symbol"]].astype(str).str.strip().str.upper()
            if not (tickers == symbol).any():
                held = ", ".join(sorted(tickers.unique())[:5])
                raise TerminalProviderError(
                    f"{where} holds tickers {held}{', ...' if tickers.nunique() > 5 else ''} but not {symbol} "
                    f"(column {mapped['symbol']})",
                    provider=self.name,
                    symbols=[symbol],
                )
            raw = raw[(tickers == symbol).to_numpy()].reset_index(drop=True)
        elif self.settings.file:
            raise TerminalProviderError(
                f"{where} is read for every symbol (file option) but has no ticker column (Ticker, Symbol): "
                "without one it cannot tell symbols apart",
                provider=self.name,
                symbols=[symbol],
            )
        ts, window_time = self._timestamps(raw, mapped, where, symbol, request)
        out = pd.DataFrame({"symbol": symbol, "ts": ts, "window_time": window_time})
        for name in ("open", "high", "low", "close", "volume", "vwap", "trades"):
            if name in mapped:
                out[name] = pd.to_numeric(raw[mapped[name]], errors="coerce")
        if self.settings.adjusted:
            self._adjust(out, raw, mapped, where, symbol)
        # Rows that share a timestamp with different values mean the columns were misread (a file of many
        # tickers, a time of day that was lost); identical repeated rows are bad data, which validation rejects.
        readable = out[out["ts"].notna()].drop(columns="window_time")
        duplicated = int((readable.duplicated(["ts"]) & ~readable.duplicated()).sum())
        if duplicated:
            raise TerminalProviderError(
                f"{where}: {duplicated} row(s) share a timestamp with a different row for {symbol}, so the bars "
                f"cannot be right ({used_and_ignored(raw.columns, mapped)}); a file of many tickers needs a Ticker or "
                "Symbol column, and a file with separate date and time columns needs both named Date and Time",
                provider=self.name,
                symbols=[symbol],
            )
        unreadable = out["ts"].isna().to_numpy()
        if unreadable.any():
            out[AS_WRITTEN] = pd.Series(None, index=out.index, dtype=object)
            out.loc[unreadable, AS_WRITTEN] = [as_written(row) for _, row in raw[unreadable].iterrows()]
        return out

    def _timestamps(
        self, raw: pd.DataFrame, mapped: dict[str, str], where: str, symbol: str, request: FetchRequest
    ) -> tuple[pd.Series, pd.Series]:
        """Each row's bar time in UTC (NaT where the file's time cannot be read) and the time that decides its
        chunk's window (for an unreadable row, the nearest readable row's), so no row is lost unseen."""
        options = self.settings
        if "ts" in mapped:
            values, time_of_day, used = raw[mapped["ts"]], None, mapped["ts"]
        elif "date" in mapped and "time" in mapped:
            values, time_of_day = raw[mapped["date"]], raw[mapped["time"]]
            used = f"{mapped['date']} + {mapped['time']}"
        else:
            used = mapped.get("date") or mapped["time"]
            values, time_of_day = raw[used], None
        try:
            parsed = parse_times(
                values,
                used,
                time_of_day=time_of_day,
                dayfirst=options.dayfirst,
                date_format=options.date_format,
                epoch_unit=options.epoch_unit,
            )
        except ValueError as exc:
            raise TerminalProviderError(f"{where}: {exc}", provider=self.name, symbols=[symbol]) from None
        tf = request.timeframe
        naive = parsed.dt.tz is None
        if not tf.intraday:
            self._check_spacing(parsed, where, symbol, tf)
            # the session date in the file's zone, at 00:00 UTC, whatever the time of day written
            local = parsed if naive else parsed.dt.tz_convert(options.timezone).dt.tz_localize(None)
            ts = local.dt.normalize().dt.tz_localize("UTC")
            return ts, nearest_readable(ts)
        ts, window_time = localize(parsed, options.timezone) if naive else (parsed, parsed)
        ts, window_time = ts.dt.tz_convert("UTC"), window_time.dt.tz_convert("UTC")
        self._check_spacing(ts, where, symbol, tf)
        if options.label == "end":  # a bar labelled 09:31 covers 09:30-09:31: its open time is 09:30
            ts, window_time = ts - tf.step, window_time - tf.step
        return ts, nearest_readable(window_time)

    def _check_spacing(self, times: pd.Series, where: str, symbol: str, tf: Timeframe) -> None:
        """Refuse a file whose bars are mostly spaced otherwise than the timeframe asked for (5-minute bars in the
        1m folder would load as minutes; minutes read as daily bars would collide on their dates)."""
        spacing = bar_spacing(times)
        if spacing is None:
            return
        daily = spacing >= pd.Timedelta(hours=20)  # a day, give or take a DST change
        if (daily and not tf.intraday) or (tf.intraday and spacing == tf.step):
            return
        if daily:
            raise TerminalProviderError(
                f"{where} holds one bar a day, not {tf.name} bars: move it where daily bars go (1d/{symbol}.csv "
                f"or {symbol}.csv) or ask for --timeframe 1d",
                provider=self.name,
                symbols=[symbol],
            )
        name = spacing_name(spacing)
        if name in TIMEFRAMES:
            advice = f"move it to a {name} folder or ask for --timeframe {name}"
        else:
            advice = f"candleflow stores {', '.join(TIMEFRAMES)} bars: give it a file of one of those"
        asked = f"{tf.name} bars" if tf.intraday else "daily bars"
        raise TerminalProviderError(
            f"{where} holds bars {name} apart, not {asked}: {advice}", provider=self.name, symbols=[symbol]
        )

    def _adjust(self, out: pd.DataFrame, raw: pd.DataFrame, mapped: dict[str, str], where: str, symbol: str) -> None:
        """Scale prices by Adj Close / Close; volume from an Adj Volume column, or (adjust_volume=true) by the
        inverse factor, else as written."""
        if "adj close" not in mapped:
            raise TerminalProviderError(
                f"{where} has no Adj Close column for adjusted=true", provider=self.name, symbols=[symbol]
            )
        factor = pd.to_numeric(raw[mapped["adj close"]], errors="coerce") / out["close"]
        for name in ("open", "high", "low", "close"):
            out[name] = (out[name] * factor).round(6)
        out["vwap"] = np.nan  # a vendor vwap is not adjusted with the prices
        if "adj volume" in mapped:
            out["volume"] = pd.to_numeric(raw[mapped["adj volume"]], errors="coerce")
        elif self.settings.adjust_volume:
            out["volume"] = (out["volume"] / factor).round(0)
