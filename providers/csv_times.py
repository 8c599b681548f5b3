"""How the csv provider reads a time column: one reading per column, decided from the whole column, never a guess
per row (a row-by-row parser reads 02/01/2024 month-first and 13/01/2024 day-first in the same file).

- Text: ISO dates (2024-01-02, with or without a time and a zone) as such; dd/mm and mm/dd dates by the column's
  values (a first field above 12 means day first, a second field above 12 means month first; a column where
  both orders read is refused unless the `dayfirst` or `date_format` option says which); any other text by the
  format of its first value. A value the column's format does not read is kept as NaT, so it is quarantined,
  never dropped.
- Numbers: dates written as digits (20240102, 202401020930, 20240102093000), else epoch times whose unit (s, ms,
  us, ns) follows from their magnitude or the `epoch_unit` option; numbers that are no plausible time in any
  unit are refused, and single numbers outside the unit's plausible span are NaT.
- Wall times without a zone at a DST change: a time skipped by the clock is NaT; a repeated hour is read in file
  order (summer time first, or last in a file written newest first) when the file holds it twice, else NaT.

Errors are ValueError with a message that names the column and the option to use; the provider adds the file.
"""

from __future__ import annotations

import re
from typing import Literal

import numpy as np
import pandas as pd
from pandas.tseries.api import guess_datetime_format

EpochUnit = Literal["s", "ms", "us", "ns"]
EPOCH_UNITS: tuple[EpochUnit, ...] = ("s", "ms", "us", "ns")
_PER_SECOND = {"s": 1, "ms": 10**3, "us": 10**6, "ns": 10**9}
EARLIEST = pd.Timestamp("1971-01-01", tz="UTC")  # epoch units a thousand apart never overlap from here on
YEARS_AHEAD = 5

_ISO = re.compile(r"\d{4}-\d{1,2}-\d{1,2}")
_ZONE = re.compile(r"(Z|[+-]\d{2}(:?\d{2})?)$")
_DAY_MONTH = re.compile(r"(\d{1,2})([/.-])(\d{1,2})\2(\d{4}|\d{2})(?!\d)(.*)")
_TIME_DIRECTIVES = ("%H", "%I", "%M", "%S")


def parse_times(
    values: pd.Series,
    column: str,
    *,
    time_of_day: pd.Series | None = None,
    dayfirst: bool | None = None,
    date_format: str | None = None,
    epoch_unit: EpochUnit | None = None,
) -> pd.Series:
    """`values` (with `time_of_day` from a separate Time column) as datetimes: naive when the file writes no zone,
    else UTC; NaT where a value is blank or does not read in the column's format."""
    if time_of_day is None:
        if pd.api.types.is_datetime64_any_dtype(values):
            return values
        if epoch_unit or _numeric(values):
            return _from_numbers(pd.to_numeric(values, errors="coerce"), column, epoch_unit)
        known = values.dropna()
        if len(known) and not isinstance(known.iloc[0], str):  # dates as objects (Parquet): nothing to guess
            return pd.to_datetime(values, errors="coerce", utc=getattr(known.iloc[0], "tzinfo", None) is not None)
    text = _text(values)
    if time_of_day is not None:
        text = text + " " + _text(time_of_day)
    if text.isna().all():
        return pd.Series(pd.NaT, index=values.index, dtype="datetime64[us]")
    first = _sample(text.dropna())
    fmt = date_format and _with_time(date_format, first)
    fmt = fmt or _format_of(text, first, column, dayfirst)
    zoned = "%z" in fmt or "%Z" in fmt or (fmt == "ISO8601" and bool(_ZONE.search(first)))
    parsed = pd.to_datetime(text, format=fmt, errors="coerce", utc=zoned)
    if parsed.isna().all():
        what = f"--option date_format={date_format}" if date_format else f"the format {fmt} of its first value"
        raise ValueError(f"unreadable {column}: no value reads as {what} (the first is {first!r}): {_FORMAT_HINT}")
    return parsed


_FORMAT_HINT = "pass its format as --option date_format=... (e.g. %d/%m/%Y %H:%M)"


def _numeric(values: pd.Series) -> bool:
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        return True
    first = values.dropna()
    return len(first) > 0 and isinstance(first.iloc[0], str) and bool(re.fullmatch(r"\d{6,}(\.\d*)?", first.iloc[0]))


def _sample(text: pd.Series) -> str:
    """The value the column's format is told from: its first with a digit (not a stray `n/a` above the dates)."""
    head = text.iloc[:1000]
    return str(next((v for v in head if any(c.isdigit() for c in v)), head.iloc[0]))


def _text(values: pd.Series) -> pd.Series:
    text = values.astype("string").str.strip()
    return text.mask(text == "")


def _with_time(date_format: str, first: str) -> str:
    """The user's date format, completed by the time of day's format when the value carries one it lacks (a Date
    column given its format, joined to a Time column)."""
    if any(d in date_format for d in _TIME_DIRECTIVES) or " " not in first or " " in date_format:
        return date_format
    time_format = _time_format(" " + first.split(" ", 1)[1])
    return date_format + time_format if time_format is not None else date_format


def _time_format(rest: str) -> str | None:
    """The format of what follows a date (' 09:30:00', 'T09:30Z', ''), by pandas' guess for a known date."""
    if not rest:
        return ""
    guessed = guess_datetime_format("2000-01-31" + rest)
    return guessed[len("%Y-%m-%d") :] if guessed and guessed.startswith("%Y-%m-%d") else None


def _format_of(text: pd.Series, first: str, column: str, dayfirst: bool | None) -> str:
    """The one format the whole column is read in."""
    if _ISO.match(first):
        return "ISO8601"
    match = _DAY_MONTH.match(first)
    if match is None:
        guessed = guess_datetime_format(first)
        if guessed is None:
            raise ValueError(f"unreadable {column}: cannot tell the format of {first!r}: {_FORMAT_HINT}")
        return str(guessed)
    day_first = _day_first(text, match, column, dayfirst)
    separator, year, rest = match[2], match[4], match[5]
    fields = ("%d", "%m") if day_first else ("%m", "%d")
    time_format = _time_format(rest)
    if time_format is None:
        raise ValueError(f"unreadable {column}: cannot tell the format of the time in {first!r}: {_FORMAT_HINT}")
    return separator.join([*fields, "%Y" if len(year) == 4 else "%y"]) + time_format


def _day_first(text: pd.Series, match: re.Match[str], column: str, dayfirst: bool | None) -> bool:
    """Whether the column's dd/mm-or-mm/dd dates are day first: decided by its values, or by the option when the
    values allow both (every first and second field 12 or less)."""
    fields = text.str.extract(r"^(\d{1,2})[/.-](\d{1,2})[/.-]").astype("float64")
    over = fields > 12
    by_day, by_month = over[0].any(), over[1].any()
    if by_day and by_month:
        a, b = text[over[0]].iloc[0], text[over[1]].iloc[0]
        raise ValueError(f"column {column} mixes day-first ({a}) and month-first ({b}) dates: fix the file")
    found = True if by_day else False if by_month else None
    if found is not None and dayfirst is not None and found != dayfirst:
        example = text[over[0] if by_day else over[1]].iloc[0]
        order = "day" if found else "month"
        raise ValueError(
            f"column {column} has {example} ({order} first), against --option dayfirst={str(dayfirst).lower()}: "
            f"drop the option or set dayfirst={str(found).lower()}"
        )
    if found is not None:
        return found
    if dayfirst is not None:
        return dayfirst
    separator, year = match[2], "%Y" if len(match[4]) == 4 else "%y"
    date = match.string[: match.start(5)]
    as_day = pd.to_datetime(date, format=f"%d{separator}%m{separator}{year}")
    as_month = pd.to_datetime(date, format=f"%m{separator}%d{separator}{year}")
    raise ValueError(
        f"column {column} reads both day first and month first ({date} is {as_day:%d %B %Y} or "
        f"{as_month:%B %d, %Y}; no day above 12 tells): pass --option dayfirst=true|false, or the format, e.g. "
        f"--option date_format=%d{separator}%m{separator}{year}"
    )


def _from_numbers(numbers: pd.Series, column: str, unit: EpochUnit | None) -> pd.Series:
    """yyyymmdd dates, or epoch times in `unit` (else the one unit that puts the column's median between 1971
    and a few years from now); numbers outside that span are NaT."""
    known = numbers.dropna()
    if known.empty:
        return pd.Series(pd.NaT, index=numbers.index, dtype="datetime64[us, UTC]")
    packed = _packed_format(known) if unit is None else None
    if packed is not None:
        return pd.to_datetime(numbers.astype("Int64").astype("string"), format=packed, errors="coerce")
    latest = pd.Timestamp.now(tz="UTC") + pd.DateOffset(years=YEARS_AHEAD)

    def span(u: EpochUnit) -> tuple[float, float]:
        per_second = _PER_SECOND[u]
        return EARLIEST.timestamp() * per_second, latest.timestamp() * per_second

    median = float(known.median())
    chosen = unit or next((u for u in EPOCH_UNITS if span(u)[0] <= median <= span(u)[1]), None)
    if chosen is None:
        raise ValueError(
            f"column {column} holds numbers from {known.min():.15g} to {known.max():.15g}, which are no time between "
            f"{EARLIEST.year} and {latest.year} as epoch seconds, milliseconds, microseconds or nanoseconds: "
            "if they are epoch times pass --option epoch_unit=s|ms|us|ns, else write the column as dates"
        )
    low, high = span(chosen)
    if not low <= median <= high:
        seen = pd.to_datetime(median, unit=chosen, utc=True)
        raise ValueError(
            f"column {column} read as epoch {chosen} falls in {seen.year}, not between {EARLIEST.year} and "
            f"{latest.year}: pass the right --option epoch_unit=s|ms|us|ns, or none to let the numbers tell"
        )
    plausible = numbers.where((numbers >= low) & (numbers <= high))
    whole = plausible.round().astype("Int64") if (plausible.dropna() % 1 == 0).all() else plausible
    return pd.to_datetime(whole, unit=chosen, utc=True, errors="coerce")


# Dates and times written as digits: 20240102, 202401020930, 20240102093000 (12 digits also fit epoch
# milliseconds of 1973-2001; a column every value of which reads as a date and time is taken as one).
_PACKED = {8: "%Y%m%d", 12: "%Y%m%d%H%M", 14: "%Y%m%d%H%M%S"}


def _packed_format(known: pd.Series) -> str | None:
    if not (known % 1 == 0).all():
        return None
    for digits, fmt in _PACKED.items():
        scale = 10 ** (digits - 4)
        if ((known >= 1900 * scale) & (known < 2101 * scale)).all():
            text = known.astype("int64").astype("string")
            return fmt if pd.to_datetime(text, format=fmt, errors="coerce").notna().all() else None
    return None


def localize(wall: pd.Series, timezone: str) -> tuple[pd.Series, pd.Series]:
    """Wall times in `timezone` as UTC, and the time each row's window is judged by (its UTC time, or for a time
    skipped or repeated at a DST change that has none, the nearest real one)."""
    utc = wall.dt.tz_localize(timezone, ambiguous="NaT", nonexistent="NaT")
    lost = utc.isna() & wall.notna()
    if not lost.any():
        return utc, utc
    anchor = utc.copy()
    summer = wall[lost].dt.tz_localize(timezone, ambiguous=np.ones(int(lost.sum()), dtype=bool), nonexistent="NaT")
    skipped = summer.isna()
    anchor[summer.index[skipped]] = wall[lost][skipped].dt.tz_localize(timezone, nonexistent="shift_forward")
    repeated = summer[~skipped]
    if len(repeated):
        anchor[repeated.index] = repeated
        winter = wall[repeated.index].dt.tz_localize(
            timezone, ambiguous=np.zeros(len(repeated), dtype=bool), nonexistent="NaT"
        )
        same = wall[repeated.index]
        twice = same.groupby(same).transform("size") == 2
        first = same.groupby(same).cumcount() == 0
        summer_first = not _newest_first(wall)
        resolved = repeated.where(first == summer_first, winter)
        utc[repeated.index[twice.to_numpy()]] = resolved[twice]
    return utc, anchor


def _newest_first(wall: pd.Series) -> bool:
    steps = wall.dropna().diff().dropna()
    return bool((steps < pd.Timedelta(0)).sum() > (steps > pd.Timedelta(0)).sum())


def nearest_readable(anchor: pd.Series) -> pd.Series:
    """Each row's time for choosing its window: its own, else the nearest readable row's before it in the file,
    else after it."""
    return anchor.ffill().bfill()


def bar_spacing(ts: pd.Series) -> pd.Timedelta | None:
    """The most common step between consecutive distinct times (None for fewer than two)."""
    distinct = ts.dropna().drop_duplicates().sort_values()
    steps = distinct.diff().dropna()
    steps = steps[steps > pd.Timedelta(0)]
    if steps.empty:
        return None
    return pd.Timedelta(steps.value_counts().sort_index(kind="stable").idxmax())


def spacing_name(step: pd.Timedelta) -> str:
    """`5m`, `1h`, `90s`, `2d`: a step as candleflow names timeframes."""
    seconds = int(step.total_seconds())
    for size, suffix in ((86400, "d"), (3600, "h"), (60, "m")):
        if seconds % size == 0:
            return f"{seconds // size}{suffix}"
    return f"{step.total_seconds():g}s"
