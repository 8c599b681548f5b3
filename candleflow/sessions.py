"""Exchange sessions from `exchange_calendars`: which dates trade, and their open and close in UTC."""

from __future__ import annotations

import datetime as dt
import threading
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import exchange_calendars as xcals
import numpy as np
import pandas as pd

from candleflow.errors import BadInputError
from candleflow.timeframes import Timeframe

DEFAULT_CALENDAR = "XNYS"
EARLIEST_DATE = dt.date(1990, 1, 1)
_lock = threading.Lock()


@dataclass(frozen=True)
class Calendar:
    """An exchange calendar, from exchange_calendars (XNYS, XLON, CMES, ...) or pandas_market_calendars
    (CME_Equity, CMEGlobex_Crude, ...: product calendars of futures that model the daily maintenance break).
    `table`: one row per session (naive session dates), columns open, close, break_start, break_end in UTC
    (NaT where the session has no break)."""

    name: str
    tz: str
    table: pd.DataFrame

    @property
    def sessions(self) -> pd.DatetimeIndex:
        return pd.DatetimeIndex(self.table.index)

    @property
    def first_session(self) -> pd.Timestamp:
        return pd.Timestamp(self.table.index[0])

    @property
    def last_session(self) -> pd.Timestamp:
        return pd.Timestamp(self.table.index[-1])

    def previous_session(self, date: dt.date) -> dt.date:
        """The last session strictly before `date`."""
        position = self.sessions.searchsorted(pd.Timestamp(date), side="left") - 1
        if position < 0:
            raise BadInputError(f"no session of {self.name} before {date}")
        day: dt.date = pd.Timestamp(self.sessions[position]).date()
        return day


_COLUMNS = ("open", "close", "break_start", "break_end")


@lru_cache(maxsize=16)
def _calendar(name: str) -> Calendar:
    if name in xcals.get_calendar_names():
        xcal = xcals.get_calendar(name, start=EARLIEST_DATE.isoformat())
        table = xcal.schedule.reindex(columns=list(_COLUMNS))
        return Calendar(name, str(xcal.tz), _utc_columns(table))
    import pandas_market_calendars as mcal  # product calendars (futures) exchange_calendars lacks

    if name not in mcal.get_calendar_names():
        raise BadInputError(
            f"unknown exchange calendar {name!r}: use an exchange_calendars name (XNYS, XLON, XTKS, CMES, ...) or a "
            "pandas_market_calendars one (CME_Equity, CMEGlobex_Crude, ...)"
        )
    mcal_calendar = mcal.get_calendar(name)
    last = dt.date.today() + dt.timedelta(days=366)
    raw = mcal_calendar.schedule(start_date=EARLIEST_DATE.isoformat(), end_date=last.isoformat())
    table = raw.rename(columns={"market_open": "open", "market_close": "close"}).reindex(columns=list(_COLUMNS))
    return Calendar(name, str(mcal_calendar.tz), _utc_columns(table))


def _utc_columns(table: pd.DataFrame) -> pd.DataFrame:
    table = table.copy()
    table.index = pd.DatetimeIndex(table.index).tz_localize(None).normalize()
    for column in _COLUMNS:
        table[column] = pd.to_datetime(table[column], utc=True)
    empty_break = table["break_start"] >= table["break_end"]  # a zero-length break is none
    table.loc[empty_break, ["break_start", "break_end"]] = pd.NaT
    return table


def get_calendar(name: str = DEFAULT_CALENDAR) -> Calendar:
    """The exchange calendar `name` (cached, built once per process), from 1990 to about a year ahead."""
    with _lock:  # building a calendar is not thread-safe and takes up to ~0.6 s; do it once
        return _calendar(str(name))


def schedule(start: dt.date, end: dt.date, calendar: str = DEFAULT_CALENDAR) -> pd.DataFrame:
    """Sessions from `start` to `end` inclusive: index of session dates, columns `open`, `close`, `break_start`,
    `break_end` (UTC; breaks NaT when none). Dates outside the calendar's range are clipped to it."""
    cal = get_calendar(calendar)
    first, last = cal.first_session.date(), cal.last_session.date()
    lo, hi = max(start, first), min(end, last)
    if lo > hi:
        return cal.table.iloc[0:0]
    return cal.table.loc[pd.Timestamp(lo) : pd.Timestamp(hi)]


def check_in_range(start: dt.date, end: dt.date, calendar: str = DEFAULT_CALENDAR) -> None:
    """Raise BadInputError when dates fall outside what the calendar knows."""
    cal = get_calendar(calendar)
    first, last = cal.first_session.date(), cal.last_session.date()
    if start < first:
        raise BadInputError(f"start date {start} is before {first}, the first session {calendar} knows here")
    if end > last:
        raise BadInputError(f"end date {end} is after {last}, the last session {calendar} knows: pick an earlier end")


def previous_session(date: dt.date, calendar: str = DEFAULT_CALENDAR) -> dt.date:
    """The last session strictly before `date`."""
    return get_calendar(calendar).previous_session(date)


def expected_bars_per_session(sched: pd.DataFrame, timeframe: Timeframe) -> pd.Series:
    """How many bars a full session yields at `timeframe` (grid-aligned in UTC, partial first/last bars count)."""
    if not timeframe.intraday:
        return pd.Series(1, index=sched.index, dtype="int64")
    step = timeframe.step

    def bars_between(lo: pd.Series, hi: pd.Series) -> pd.Series:
        first = lo.dt.floor(step)
        last = (hi - pd.Timedelta(microseconds=1)).dt.floor(step)
        return ((last - first) // step + 1).fillna(0).astype("int64")

    total = bars_between(sched["open"], sched["close"])
    if "break_start" in sched.columns and sched["break_start"].notna().any():
        # bars wholly inside a break (a lunch break, a maintenance halt) do not exist
        inner_lo, inner_hi = sched["break_start"].dt.ceil(step), sched["break_end"].dt.floor(step)
        total -= ((inner_hi - inner_lo) // step).clip(lower=0).fillna(0).astype("int64")
    return total


SessionHours = Literal["regular", "extended"]
EXTENDED_OPEN, EXTENDED_CLOSE = dt.time(4, 0), dt.time(20, 0)  # US equities' pre- and post-market, local time


def session_bounds(
    start: dt.date, end: dt.date, calendar: str = DEFAULT_CALENDAR, hours: SessionHours = "regular"
) -> pd.DataFrame:
    """Each session's trading interval [lo, hi) in UTC: the regular open and close, or with `extended` hours
    from 04:00 to 20:00 in the calendar's zone (US pre- and post-market), never narrower than regular."""
    sched = schedule(start, end, calendar)
    lo, hi = sched["open"], sched["close"]
    if hours == "extended" and not sched.empty:
        tz = str(get_calendar(calendar).tz)
        days = pd.DatetimeIndex(sched.index)
        ext_lo = pd.Series((days + pd.Timedelta(hours=4)).tz_localize(tz).tz_convert("UTC"), index=sched.index)
        ext_hi = pd.Series((days + pd.Timedelta(hours=20)).tz_localize(tz).tz_convert("UTC"), index=sched.index)
        lo, hi = pd.concat([lo, ext_lo], axis=1).min(axis=1), pd.concat([hi, ext_hi], axis=1).max(axis=1)
    frame = pd.DataFrame({"lo": lo, "hi": hi}, index=sched.index)
    for column in ("break_start", "break_end"):
        frame[column] = sched[column] if column in sched.columns else pd.NaT
    return frame


def sessions_of(
    ts: pd.Series, timeframe: Timeframe, calendar: str = DEFAULT_CALENDAR, hours: SessionHours = "regular"
) -> pd.Series:
    """The session date each bar belongs to, or NaT for a bar outside every session: a daily bar by its date,
    an intraday bar [ts, ts + step) by the session interval it overlaps (by time, never by UTC date)."""
    stamps = pd.to_datetime(ts, utc=True)
    if stamps.empty:
        return pd.Series(pd.NaT, index=ts.index, dtype="datetime64[ns]")
    first = (stamps.min() - pd.Timedelta(days=2)).date()
    last = (stamps.max() + pd.Timedelta(days=2)).date()
    if not timeframe.intraday:
        days = stamps.dt.tz_localize(None).dt.normalize()
        known = days.isin(pd.DatetimeIndex(schedule(first, last, calendar).index))
        return days.where(known)
    bounds = session_bounds(first, last, calendar, hours)
    lo = bounds["lo"].to_numpy(dtype="datetime64[ns]")
    hi = bounds["hi"].to_numpy(dtype="datetime64[ns]")
    start = stamps.dt.tz_localize(None).to_numpy(dtype="datetime64[ns]")
    end = start + np.timedelta64(int(timeframe.step / pd.Timedelta(microseconds=1)), "us")
    index = np.searchsorted(lo, end, side="left") - 1  # the last session opening before the bar ends
    valid = index >= 0
    inside = np.zeros(len(start), dtype=bool)
    inside[valid] = hi[index[valid]] > start[valid]
    days = pd.DatetimeIndex(bounds.index).to_numpy(dtype="datetime64[ns]")
    pause_lo = pd.to_datetime(bounds["break_start"], utc=True).dt.tz_localize(None).to_numpy(dtype="datetime64[ns]")
    pause_hi = pd.to_datetime(bounds["break_end"], utc=True).dt.tz_localize(None).to_numpy(dtype="datetime64[ns]")
    has_pause = inside & ~np.isnat(pause_lo[np.maximum(index, 0)])
    at = index[has_pause]
    inside[has_pause] = ~((start[has_pause] >= pause_lo[at]) & (end[has_pause] <= pause_hi[at]))  # wholly in a break
    out = np.full(len(start), np.datetime64("NaT"), dtype="datetime64[ns]")
    out[inside] = days[index[inside]]
    return pd.Series(out, index=ts.index)


def final_through(
    window_start: pd.Timestamp,
    window_end: pd.Timestamp,
    intraday: bool,
    as_of: pd.Timestamp,
    calendar: str = DEFAULT_CALENDAR,
) -> pd.Timestamp:
    """How far the bars of the UTC window [window_start, window_end) were final at `as_of`: up to the first
    session that had not closed yet (its open for intraday bars, its date's 00:00 UTC for daily bars), else the
    whole window. A chunk fetched before then is complete only up to this point and is fetched again later."""
    last_day = (window_end - pd.Timedelta(microseconds=1)).date()
    sched = schedule(window_start.date(), last_day, calendar)
    still_open = sched[sched["close"] > as_of]
    if still_open.empty:
        return window_end
    first = still_open.iloc[0]
    boundary = first["open"] if intraday else pd.Timestamp(still_open.index[0]).tz_localize("UTC")
    return max(window_start, min(window_end, pd.Timestamp(boundary).tz_convert("UTC")))


def closed_sessions(
    start: dt.date, end: dt.date, calendar: str = DEFAULT_CALENDAR, now: pd.Timestamp | None = None
) -> pd.DataFrame:
    """`schedule(start, end)` without the sessions that had not closed by `now` (default: the real clock):
    a session still trading, or in the future, cannot be complete yet."""
    sched = schedule(start, end, calendar)
    moment = now if now is not None else pd.Timestamp.now(tz="UTC")
    return sched[sched["close"] <= moment]
