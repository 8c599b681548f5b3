"""Coverage: which sessions of the exchange calendar have bars, which lack them, and why. Pure."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import pandas as pd

from candleflow.model import LedgerEntry, LedgerStatus
from candleflow.planning import utc_midnight
from candleflow.sessions import expected_bars_per_session
from candleflow.timeframes import Timeframe


@dataclass(frozen=True)
class Gap:
    session: dt.date
    expected: int
    present: int
    reason: str


def explain(session: dt.date, entries: Iterable[LedgerEntry]) -> str:
    """Why a session lacks bars, from the ledger row whose window holds it (latest outcome wins)."""
    noon = utc_midnight(session) + pd.Timedelta(hours=12)  # inside the session's chunk, whatever its windows
    holding = [e for e in entries if e.window_start <= noon < e.window_end]
    if not holding:
        return "not fetched yet (no ledger row covers it)"
    statuses = {e.status for e in holding}
    if LedgerStatus.FAILED in statuses:
        return "chunk failed (see ingest_ledger.error)"
    if LedgerStatus.REJECTED in statuses:
        return "chunk rejected by validation (see quarantine)"
    if statuses == {LedgerStatus.EMPTY}:
        return "provider had no bars (ledger: empty)"
    return "unexplained: chunk loaded but the session has no or too few bars"


def find_gaps(
    schedule: pd.DataFrame,
    timeframe: Timeframe,
    bars_per_session: Mapping[dt.date, int],
    ledger: Iterable[LedgerEntry],
    *,
    partial: bool = True,
) -> list[Gap]:
    """Sessions with no bar, or (with `partial`) fewer bars than a full session at `timeframe` has."""
    entries = list(ledger)
    expected = expected_bars_per_session(schedule, timeframe)
    gaps = []
    for session, want in expected.items():
        day = session.date()
        have = int(bars_per_session.get(day, 0))
        if have == 0 or (partial and have < want):
            gaps.append(Gap(day, int(want), have, explain(day, entries)))
    return gaps
