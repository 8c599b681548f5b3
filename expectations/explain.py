"""Why a chunk failed validation, in words a person can act on. The rules keep their names (each expectation's
`meta.rule` in the suite file); this adds, per rule, how many rows broke it and the first few at their local time
in the exchange calendar's zone, for bars outside every session the hours they were checked against, and the
options that would let the chunk in. One line, however many rules failed."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import pandas as pd

from candleflow.sessions import SessionHours, get_calendar, session_bounds
from candleflow.timeframes import get_timeframe
from expectations.validate import ChunkVerdict, suite_path

SHOWN = 3  # timestamps named per rule


@dataclass(frozen=True)
class WaysOut:
    """Which options the run could change: `on_invalid` is reject, the provider takes an `hours` option."""

    reject: bool
    hours_option: bool


@lru_cache(maxsize=4)
def rule_of_column(column: str, suite_name: str = "ohlcv") -> str | None:
    """The rule name the suite gives the expectation on `column` (e.g. `in_session`), from the suite file."""
    spec = json.loads(suite_path(suite_name).read_text())
    for expectation in spec["expectations"]:
        if expectation.get("kwargs", {}).get("column") == column:
            return str((expectation.get("meta") or {}).get("rule") or expectation["type"])
    return None


def explain_verdict(verdict: ChunkVerdict, frame: pd.DataFrame, *, hours: SessionHours, ways_out: WaysOut) -> str:
    """`high >= low: 1 row(s) at 2024-01-02 09:35 America/New_York; ... Ways out: ...`, for a chunk whose
    `verdict` failed. Rules broken by the same rows share one entry."""
    chunk = verdict.chunk
    by_rule: dict[str, list[int]] = {rule: [] for rule in verdict.failed_rules}
    for position, rules in sorted(verdict.bad_rows.items()):
        for rule in rules:
            by_rule.setdefault(rule, []).append(position)
    grouped: dict[tuple[int, ...], list[str]] = {}
    for rule, positions in by_rule.items():
        grouped.setdefault(tuple(positions), []).append(rule)
    session_rule = rule_of_column("in_session")
    intraday = get_timeframe(chunk.timeframe).intraday
    parts = []
    for rows, rules in grouped.items():
        text = ", ".join(rules)
        if rows and _no_times(frame, rows):  # the source's time was blank or unreadable
            text += f": {len(rows)} row(s) with no readable time (the quarantine keeps them as written)"
        elif rows:
            text += f": {len(rows)} row(s) at {_when(frame, rows, chunk.timeframe, chunk.calendar)}"
            if session_rule in rules and intraday:
                text += f", outside {_hours(chunk.window_start, chunk.window_end, chunk.calendar, hours)}"
            elif session_rule in rules:
                text += f", dates {chunk.calendar} has no session on"
        parts.append(text)
    options = []
    if ways_out.reject:
        options.append("--on-invalid quarantine_rows loads the other rows")
    if session_rule in by_rule:
        if ways_out.hours_option and hours == "regular" and intraday:
            options.append("--option hours=extended if they are pre- or post-market bars")
        options.append(f"--calendar NAME if {chunk.shown_symbol} trades on another exchange than {chunk.calendar}")
    ways = f". Ways out: {'; '.join(options)}" if options else ""
    return "; ".join(parts) + ways


def _no_times(frame: pd.DataFrame, positions: Sequence[int]) -> bool:
    return "ts" in frame and bool(frame["ts"].iloc[list(positions)].isna().all())


def _when(frame: pd.DataFrame, positions: Sequence[int], timeframe: str, calendar: str) -> str:
    """The first few rows' times: local to the calendar for intraday bars, the session date for daily ones."""
    shown = list(positions[:SHOWN])
    stamps = pd.to_datetime(frame["ts"].iloc[shown], utc=True, errors="coerce") if "ts" in frame else None
    if stamps is None:
        return "(no ts column)"
    intraday = get_timeframe(timeframe).intraday
    tz = get_calendar(calendar).tz
    texts = [
        "(no time)"
        if pd.isna(ts)
        else ts.tz_convert(tz).strftime("%Y-%m-%d %H:%M")
        if intraday
        else ts.strftime("%Y-%m-%d")
        for ts in stamps
    ]
    more = f" and {len(positions) - len(shown)} more" if len(positions) > len(shown) else ""
    return ", ".join(texts) + (f" {tz}" if intraday else "") + more


def _hours(start: pd.Timestamp, end: pd.Timestamp, calendar: str, hours: SessionHours) -> str:
    """`regular hours 09:30-16:00 America/New_York (XNYS)`, the window's most common, with its break if any."""
    last = (end - pd.Timedelta(microseconds=1)).date()
    bounds = session_bounds(start.date(), last, calendar, hours)
    if bounds.empty:
        return f"the sessions of {calendar} (none from {start.date()} to {last})"
    tz = get_calendar(calendar).tz

    def local(column: str) -> pd.Series:
        return pd.to_datetime(bounds[column], utc=True).dt.tz_convert(tz).dt.strftime("%H:%M")

    spans = local("lo") + "-" + local("hi")
    pauses = (local("break_start") + "-" + local("break_end")).where(bounds["break_start"].notna(), "")
    (span, pause), _ = Counter(zip(spans, pauses, strict=True)).most_common(1)[0]
    return f"{hours} hours {span} {tz}" + (f", break {pause}" if pause else "") + f" ({calendar})"
