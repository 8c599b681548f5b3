"""Coverage: which sessions of the exchange calendar have bars, which lack them, and why. Pure.

Every session of a series is one of:
- complete: a bar for every interval of its regular hours (or, for vendors that send no bar for an interval
  without trades, at least one bar); pre- and post-market bars are extra, never counted for a regular interval;
- partial: some bars, fewer than a full session has;
- explained: no bars, and the ledger says why: the provider had none, or validation rejected them (all, or the
  session's rows of a `partial` chunk);
- missing: no bars and nothing explains it: never fetched, the fetch failed, or a loaded chunk lacks it.
A missing or unexplained partial session is what `repair_gaps` fetches again.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import pandas as pd

from candleflow.model import LedgerEntry, LedgerStatus
from candleflow.planning import utc_midnight
from candleflow.sessions import SessionHours, expected_bars_per_session
from candleflow.timeframes import Timeframe


class Reason(StrEnum):
    """Why a session lacks (enough) bars, from the ledger."""

    NOT_FETCHED = "not fetched yet (no ledger row covers it)"
    FAILED = "chunk failed (see ingest_ledger.error)"
    REJECTED = "chunk rejected by validation (see quarantine)"
    QUARANTINED = "bad rows quarantined, the rest loaded (ledger: partial; see quarantine)"
    EMPTY = "provider had no bars (ledger: empty)"
    UNEXPLAINED = "unexplained: chunk loaded but the session has no or too few bars"


class SessionState(StrEnum):
    COMPLETE = "complete"
    PARTIAL = "partial"
    EXPLAINED = "explained"
    MISSING = "missing"


# Reasons a fetch may cure: nobody fetched it, the fetch failed, or bars went missing after a load. A rejected
# chunk needs a person (see quarantine) and an empty one was answered already.
REPAIRABLE = frozenset({Reason.NOT_FETCHED, Reason.FAILED, Reason.UNEXPLAINED})


@dataclass(frozen=True, slots=True)
class SessionCoverage:
    session: dt.date
    expected: int
    present: int
    state: SessionState
    reason: Reason | None  # None for complete sessions

    @property
    def repairable(self) -> bool:
        return self.reason in REPAIRABLE


def hours_counted(partial: bool) -> SessionHours:
    """Which intraday bars count toward their session. For vendors that send a bar for every interval
    (`partial`), only the regular session's: its count then says how many regular intervals have their bar, and
    a pre- or post-market bar never stands in for a missing regular one. For vendors that send bars only when
    traded, any bar of the extended session (one is enough to make it complete)."""
    return "regular" if partial else "extended"


def explain(session: dt.date, entries: Iterable[LedgerEntry]) -> Reason:
    """Why a session lacks bars, from the ledger rows whose window holds it (a failure anywhere wins)."""
    noon = utc_midnight(session) + pd.Timedelta(hours=12)  # inside the session's chunk, whatever its windows
    holding = [e for e in entries if e.window_start <= noon < e.window_end]
    if not holding:
        return Reason.NOT_FETCHED
    statuses = {e.status for e in holding}
    if LedgerStatus.FAILED in statuses:
        return Reason.FAILED
    if LedgerStatus.REJECTED in statuses:
        return Reason.REJECTED
    if LedgerStatus.PARTIAL in statuses:
        return Reason.QUARANTINED
    if statuses == {LedgerStatus.EMPTY}:
        return Reason.EMPTY
    return Reason.UNEXPLAINED


def classify_sessions(
    schedule: pd.DataFrame,
    timeframe: Timeframe,
    bars_per_session: Mapping[dt.date, int],
    ledger: Iterable[LedgerEntry],
    *,
    partial: bool = True,
    expected: pd.Series | None = None,
) -> list[SessionCoverage]:
    """Each session of `schedule` with its state, from `bars_per_session` counted with `hours_counted(partial)`
    hours. `partial=False` for vendors that send no bar for an interval
    without trades: any bar makes the session complete. `expected`: `expected_bars_per_session(schedule,
    timeframe)`, when the caller classifies many series over one schedule."""
    entries = list(ledger)
    if expected is None:
        expected = expected_bars_per_session(schedule, timeframe)
    days = _session_days(expected)
    wants = expected.to_numpy(dtype="int64")
    haves = np.fromiter((bars_per_session.get(day, 0) for day in days), dtype="int64", count=len(days))
    complete = (haves > 0) & ((haves >= wants) | (not partial))
    if complete.all() and (haves == wants).all():  # the common case: every session exactly full
        return list(_all_complete(schedule, timeframe, expected))
    out = []
    for day, want, have, ok in zip(days, wants.tolist(), haves.tolist(), complete.tolist(), strict=True):
        if ok:
            out.append(SessionCoverage(day, want, have, SessionState.COMPLETE, None))
            continue
        reason = explain(day, entries)
        if have > 0:
            state = SessionState.PARTIAL
        else:
            state = SessionState.MISSING if reason in REPAIRABLE else SessionState.EXPLAINED
        out.append(SessionCoverage(day, want, have, state, reason))
    return out


_last_days: tuple[pd.Series, np.ndarray] | None = None  # see _session_days


def _session_days(expected: pd.Series) -> np.ndarray:
    """The session dates of `expected` as datetime.date objects, converted once for the many series a caller
    classifies over one `expected` (the conversion was most of classifying a complete daily series)."""
    global _last_days
    last = _last_days
    if last is not None and last[0] is expected:
        return last[1]
    days: np.ndarray = pd.DatetimeIndex(expected.index).date
    _last_days = (expected, days)
    return days


_complete_lists: dict[tuple[int, str, int], list[SessionCoverage]] = {}  # see _all_complete


def _all_complete(schedule: pd.DataFrame, timeframe: Timeframe, expected: pd.Series) -> list[SessionCoverage]:
    """Every session of `expected` complete with exactly its bars, built once per schedule: the entries are
    immutable, so the many series of one run share them (a 500-symbol backfill would build 629,000)."""
    wants = expected.to_numpy(dtype="int64")
    sessions = pd.DatetimeIndex(expected.index).asi8
    key = (hash((sessions.tobytes(), wants.tobytes())), timeframe.name, len(expected))
    if key not in _complete_lists or len(_complete_lists) > 64:
        if len(_complete_lists) > 64:
            _complete_lists.clear()
        days = pd.DatetimeIndex(expected.index).date
        _complete_lists[key] = [
            SessionCoverage(day, want, want, SessionState.COMPLETE, None)
            for day, want in zip(days, wants.tolist(), strict=True)
        ]
    return _complete_lists[key]


def repair_ranges(coverage: Sequence[SessionCoverage]) -> list[tuple[dt.date, dt.date]]:
    """The sessions a fetch may cure, as inclusive (first, last) ranges of consecutive sessions of `coverage`
    (consecutive in the calendar: a weekend between two missing sessions does not split them)."""
    ranges: list[tuple[dt.date, dt.date]] = []
    for repairable, run in itertools.groupby(coverage, key=lambda c: c.repairable):
        if repairable:
            sessions = [c.session for c in run]
            ranges.append((sessions[0], sessions[-1]))
    return ranges


# The coverage grid: one glyph per month, the worst state of its sessions wins.
_GLYPHS = {
    SessionState.COMPLETE: "■",
    SessionState.PARTIAL: "◩",
    SessionState.EXPLAINED: "▨",
    SessionState.MISSING: "□",
}
_WORST_FIRST = (SessionState.MISSING, SessionState.PARTIAL, SessionState.EXPLAINED, SessionState.COMPLETE)
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def month_cell(sessions: Sequence[SessionCoverage]) -> str:
    """`■ 21` when all 21 sessions are complete, else the worst state's glyph and complete/all, e.g. `□ 19/21`
    (a no-break space keeps glyph and numbers together in narrow columns)."""
    if not sessions:
        return ""
    states = Counter(c.state for c in sessions)
    worst = next(s for s in _WORST_FIRST if states[s])
    done = states[SessionState.COMPLETE]
    numbers = f"{done}" if done == len(sessions) else f"{done}/{len(sessions)}"
    return f"{_GLYPHS[worst]}\u00a0{numbers}"


@dataclass(frozen=True)
class CoverageRange:
    """Consecutive sessions of one series sharing a state and a reason."""

    first: dt.date
    last: dt.date
    sessions: int
    state: SessionState
    reason: Reason | None


def incomplete_ranges(coverage: Sequence[SessionCoverage]) -> list[CoverageRange]:
    """The series' sessions that are not complete, as ranges of consecutive sessions with one state and reason."""
    out = []
    for (state, reason), run in itertools.groupby(coverage, key=lambda c: (c.state, c.reason)):
        if state is SessionState.COMPLETE:
            continue
        days = [c.session for c in run]
        out.append(CoverageRange(days[0], days[-1], len(days), state, reason))
    return out


def coverage_markdown(title: str, series: Mapping[str, Sequence[SessionCoverage]], *, detail_limit: int = 40) -> str:
    """A symbol-by-month grid of session coverage (a row per series and year, a column per month), a legend,
    totals per state, and the incomplete sessions as ranges with their reasons."""
    lines = [f"## {title}", ""]
    legend = "■ complete · ◩ partial (fewer bars than the session has) · ▨ explained (no bars; the ledger says why)"
    lines += [legend + " · □ missing (no bars, nothing explains it). Numbers: complete sessions / sessions.", ""]
    lines += ["| series | year | " + " | ".join(_MONTHS) + " |", "|---|---:|" + "---|" * 12]
    totals: Counter[SessionState] = Counter()
    problems: list[tuple[str, CoverageRange]] = []
    # Complete series share their (immutable) entries (classify_sessions): their rows are worked out once.
    worked: dict[tuple[int, ...], tuple[Counter[SessionState], list[CoverageRange], list[tuple[int, str]]]] = {}
    for name, coverage in series.items():
        same = tuple(map(id, coverage))
        if same not in worked:
            worked[same] = (Counter(c.state for c in coverage), incomplete_ranges(coverage), _rows(coverage))
        states, ranges, rows = worked[same]
        totals.update(states)
        problems += [(name, r) for r in ranges]
        lines += [f"| {name} | {year} | {cells} |" for year, cells in rows]
    if not series:
        lines.append("| (no series) | | " + " | " * 11 + " |")
    lines += ["", "Sessions: " + ", ".join(f"{totals[s]} {s}" for s in reversed(_WORST_FIRST)), ""]
    if problems:
        lines += ["| series | sessions | state | why |", "|---|---|---|---|"]
        for name, r in problems[:detail_limit]:
            when = f"{r.first}" if r.sessions == 1 else f"{r.first}..{r.last} ({r.sessions})"
            lines.append(f"| {name} | {when} | {r.state} | {r.reason} |")
        if len(problems) > detail_limit:
            lines.append(f"| ... | {len(problems) - detail_limit} more ranges | | see `candleflow gaps` |")
    return "\n".join(lines)


def _rows(coverage: Sequence[SessionCoverage]) -> list[tuple[int, str]]:
    """A series' grid rows: (year, its twelve month cells joined)."""
    by_year: dict[int, dict[int, list[SessionCoverage]]] = {}
    for c in coverage:
        by_year.setdefault(c.session.year, {}).setdefault(c.session.month, []).append(c)
    return [
        (year, " | ".join(month_cell(months.get(m, [])) for m in range(1, 13)))
        for year, months in sorted(by_year.items())
    ]
