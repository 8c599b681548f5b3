"""Freshness: how many closed sessions of its calendar each series lags behind, and why. Pure.

A series' lag is the number of sessions of its exchange calendar that have closed since the session of its newest
bar (0: current). Why it lags is read from the ledger rows whose window reaches past that bar:
- failed: a fetch after the newest bar failed (the ledger keeps the error);
- rejected: its bars failed validation (see quarantine);
- provider had no bars: the vendor was asked for the sessions after it and answered none;
- not fetched since: no run asked for them (is the incremental schedule on?);
- never loaded: the series has no bar at all.
A series whose symbol the vendor stopped listing is `delisted`: it is reported, never a failure.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import pandas as pd

from candleflow.model import LedgerEntry, LedgerStatus
from candleflow.sessions import closed_sessions, sessions_of
from candleflow.timeframes import Timeframe


class LagReason(StrEnum):
    CURRENT = "current"
    NEVER_LOADED = "never loaded"
    FAILED = "failed"
    REJECTED = "rejected"
    NO_BARS = "provider had no bars"
    NOT_FETCHED = "not fetched since"
    DELISTED = "delisted"


@dataclass(frozen=True)
class SeriesFreshness:
    provider: str
    symbol: str
    timeframe: str
    calendar: str
    newest: pd.Timestamp | None  # the newest bar's open time (UTC); None: no bar
    newest_session: dt.date | None
    lag: int | None  # closed sessions since newest_session; None: never loaded
    reason: LagReason
    detail: str = ""  # the ledger's error, or what the vendor said
    delisted_on: dt.date | None = None  # the vendor's last listing date, when it stopped listing the symbol
    newly_delisted: bool = False  # this check found it delisted (later checks do not report it again)

    def stale(self, max_lag: int) -> bool:
        """Whether it lags more than `max_lag` sessions (never loaded counts), unless delisted."""
        if self.reason is LagReason.DELISTED:
            return False
        return self.lag is None or self.lag > max_lag

    @property
    def series(self) -> str:
        return f"{self.provider} {self.symbol} {self.timeframe}"

    @property
    def why(self) -> str:
        """The reason alone: `provider had no bars`, `failed: HTTP 500 ...`, `delisted on 2026-11-20`."""
        if self.reason is LagReason.DELISTED:
            return f"delisted on {self.delisted_on}" + (" (found by this check)" if self.newly_delisted else "")
        return f"{self.reason}{': ' + self.detail if self.detail else ''}"

    def describe(self) -> str:
        """`synthetic STALE 1d: 7 sessions behind (newest 2026-11-25): provider had no bars`."""
        if self.reason is LagReason.DELISTED:
            return f"{self.series}: delisted by the vendor on {self.delisted_on} (newest bar {self.newest_session})"
        if self.lag is None:
            if self.reason is LagReason.NEVER_LOADED:
                return f"{self.series}: never loaded"
            return f"{self.series}: never loaded ({self.reason}{': ' + self.detail if self.detail else ''})"
        behind = f"{self.lag} session{'s' if self.lag != 1 else ''} behind (newest {self.newest_session})"
        if self.reason is LagReason.CURRENT:
            return f"{self.series}: current (newest {self.newest_session})"
        why = f" ({self.detail})" if self.detail else ""
        return f"{self.series}: {behind}: {self.reason}{why}"

    def as_json(self) -> dict[str, object]:
        return {
            "provider": self.provider,
            "symbol": self.symbol,
            "timeframe": self.timeframe,
            "calendar": self.calendar,
            "newest": None if self.newest is None else self.newest.isoformat(),
            "newest_session": None if self.newest_session is None else str(self.newest_session),
            "lag_sessions": self.lag,
            "reason": str(self.reason),
            "detail": self.detail,
            "delisted_on": None if self.delisted_on is None else str(self.delisted_on),
        }


DEFAULT_MAX_LAG = 1  # sessions a series may lag before a check calls it stale


def newest_sessions(newest: pd.Series, timeframe: Timeframe, calendar: str) -> list[dt.date]:
    """The session each newest bar belongs to (by time, for intraday bars: sessions.sessions_of, extended hours);
    for a bar outside every session, its UTC date."""
    if newest.empty:
        return []
    stamps = pd.Series(pd.to_datetime(newest, utc=True).to_numpy())
    days = sessions_of(stamps, timeframe, calendar, "extended")
    return [
        pd.Timestamp(ts).date() if pd.isna(d) else pd.Timestamp(d).date() for d, ts in zip(days, stamps, strict=True)
    ]


def newest_lags(
    newest: pd.Series, timeframe: Timeframe, calendar: str, now: pd.Timestamp | None = None
) -> tuple[list[dt.date], list[int]]:
    """Each newest bar's session (`newest_sessions`) and its lag: the sessions of `calendar` closed after it."""
    days = newest_sessions(newest, timeframe, calendar)
    return days, [n for n in lags(days, calendar, now) if n is not None]  # every day is known: none is None


def lags(sessions: Sequence[dt.date | None], calendar: str, now: pd.Timestamp | None = None) -> list[int | None]:
    """For each session date, how many sessions of `calendar` closed after it, by `now` (default: the clock)."""
    known = [s for s in sessions if s is not None]
    if not known:
        return [None for _ in sessions]
    moment = now if now is not None else pd.Timestamp.now(tz="UTC")
    closed = closed_sessions(min(known), moment.date() + dt.timedelta(days=1), calendar, now=moment)
    days = np.array(pd.DatetimeIndex(closed.index).date, dtype="datetime64[D]")
    out: list[int | None] = []
    for s in sessions:
        if s is None:
            out.append(None)
            continue
        out.append(int(len(days) - np.searchsorted(days, np.datetime64(s, "D"), side="right")))
    return out


def lag_reason(newest: pd.Timestamp | None, entries: Iterable[LedgerEntry]) -> tuple[LagReason, str]:
    """Why a series has nothing after `newest` (None: no bar at all), from its ledger rows: the rows whose window
    reaches past the newest bar, a failure before a rejection before an empty answer."""
    after = [e for e in entries if newest is None or e.window_end > newest]
    by_time = sorted(after, key=lambda e: e.window_start, reverse=True)
    for status, reason in ((LedgerStatus.FAILED, LagReason.FAILED), (LedgerStatus.REJECTED, LagReason.REJECTED)):
        hit = next((e for e in by_time if e.status is status), None)
        if hit is not None:
            return reason, _one_line(hit.error)
    if newest is None:
        if any(e.status is LedgerStatus.EMPTY for e in after):
            return LagReason.NO_BARS, "every chunk fetched was empty"
        return LagReason.NEVER_LOADED, ""
    # The vendor was asked past the newest bar when a row's window (final part) reaches beyond its session.
    asked = [e for e in after if e.final_end > newest + pd.Timedelta(days=1)]
    if asked:
        return LagReason.NO_BARS, ""
    return LagReason.NOT_FETCHED, "no run asked for the sessions after it: is the incremental schedule on?"


def _one_line(text: str | None, limit: int = 160) -> str:
    line = " ".join((text or "").split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def laggards_first(rows: Iterable[SeriesFreshness]) -> list[SeriesFreshness]:
    """Never loaded first, then by lag, largest first; delisted series last."""

    def key(r: SeriesFreshness) -> tuple[int, int, str]:
        if r.reason is LagReason.DELISTED:
            return (2, 0, r.series)
        return (0, 0, r.series) if r.lag is None else (1, -r.lag, r.series)

    return sorted(rows, key=key)


def freshness_markdown(title: str, rows: Sequence[SeriesFreshness], max_lag: int, *, limit: int = 200) -> str:
    """The series laggards first: lag in sessions, newest bar, and why, as a markdown table."""
    ordered = laggards_first(rows)
    stale = [r for r in ordered if r.stale(max_lag)]
    delisted = [r for r in ordered if r.reason is LagReason.DELISTED]
    lines = [f"## {title}", ""]
    lines.append(
        f"{len(rows)} series; {len(stale)} lag more than {max_lag} session{'s' if max_lag != 1 else ''}; "
        f"{len(delisted)} delisted by the vendor."
    )
    lines += ["", "| series | lag (sessions) | newest bar | state | why |", "|---|---:|---|---|---|"]
    for r in ordered[:limit]:
        lag = "never loaded" if r.lag is None else str(r.lag)
        state = "stale" if r.stale(max_lag) else ("delisted" if r.reason is LagReason.DELISTED else "ok")
        lines.append(f"| {r.series} | {lag} | {r.newest_session or ''} | {state} | {r.why} |")
    if len(ordered) > limit:
        lines.append(f"| ... | {len(ordered) - limit} more series | | | see `candleflow freshness` |")
    return "\n".join(lines)
