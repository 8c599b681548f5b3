"""Freshness of a universe's series, free of Prefect: each series' lag and reason (candleflow.freshness) from the
warehouse's newest bars and ledger, and, for the series lagging too far, the vendor asked which it stopped
listing. A delisting is kept in the warehouse (warehouse/watch.py), so it is reported by the check that finds it
and shown as delisted, never failing, afterwards. The CLI calls it directly; flows/freshness.py in a flow."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import pandas as pd
import sqlalchemy as sa

from candleflow.freshness import (
    LagReason,
    SeriesFreshness,
    lag_reason,
    laggards_first,
    newest_lags,
)
from candleflow.model import LedgerEntry
from candleflow.timeframes import get_timeframe
from ingest.universes import local_pace
from providers.base import Provider
from providers.errors import ProviderError
from warehouse.queries import has_schema, read_ledger, read_watermarks
from warehouse.watch import known_delistings, record_delistings

ASK_AT_MOST = 200  # lagging series whose listing one check asks the vendor about (one request each at worst)


def measure_freshness(
    engine: sa.Engine,
    provider: str,
    symbols: Sequence[str],
    timeframe: str,
    calendars: Mapping[str, str],
    *,
    now: pd.Timestamp | None = None,
) -> list[SeriesFreshness]:
    """Each series' lag (closed sessions of its calendar since its newest bar) and why, delistings recorded
    earlier applied (unless the series has bars after its delisting date: listed again)."""
    tf = get_timeframe(timeframe)
    stored = has_schema(engine)
    marks = read_watermarks(engine, provider, symbols, tf.name) if stored else {}
    since = min(marks.values()) if marks and len(marks) == len(symbols) else None
    ledger = read_ledger(engine, provider, symbols, tf.name, since=since) if stored else []
    delisted = known_delistings(engine, provider, symbols)
    by_symbol: dict[str, list[LedgerEntry]] = {}
    for entry in ledger:
        by_symbol.setdefault(entry.symbol, []).append(entry)
    out: list[SeriesFreshness] = []
    for calendar in dict.fromkeys(calendars[s] for s in symbols):
        mine = [s for s in symbols if calendars[s] == calendar]
        held = [s for s in mine if s in marks]
        sessions, behind = newest_lags(pd.Series([marks[s] for s in held]), tf, calendar, now)
        days, lag_of = dict(zip(held, sessions, strict=True)), dict(zip(held, behind, strict=True))
        for symbol in mine:
            newest, session, lag = marks.get(symbol), days.get(symbol), lag_of.get(symbol)
            reason, detail = (LagReason.CURRENT, "") if lag == 0 else lag_reason(newest, by_symbol.get(symbol, []))
            row = SeriesFreshness(provider, symbol, tf.name, calendar, newest, session, lag, reason, detail)
            gone = delisted.get(symbol)
            if gone is not None and (session is None or session <= gone) and lag != 0:
                row = replace(row, reason=LagReason.DELISTED, detail="", delisted_on=gone)
            out.append(row)
    return out


@dataclass(frozen=True)
class FreshnessReport:
    """A check's outcome: every series, laggards first, and what the vendor said."""

    rows: list[SeriesFreshness]
    max_lag: int
    vendor_note: str = ""  # why the vendor could not be asked about delistings, when it could not

    @property
    def stale(self) -> list[SeriesFreshness]:
        return [r for r in self.rows if r.stale(self.max_lag)]

    @property
    def newly_delisted(self) -> list[SeriesFreshness]:
        return [r for r in self.rows if r.newly_delisted]

    @property
    def delisted(self) -> list[SeriesFreshness]:
        return [r for r in self.rows if r.reason is LagReason.DELISTED]

    @property
    def ok(self) -> bool:
        return not self.stale

    def headline(self) -> str:
        """`freshness: 2 of 12 series lag more than 1 session (1 delisted, 1 found now)`."""
        n, s = len(self.rows), len(self.stale)
        lag = f"{self.max_lag} session{'s' if self.max_lag != 1 else ''}"
        told = f"; {len(self.delisted)} delisted" if self.delisted else ""
        if self.newly_delisted:
            told += f" ({len(self.newly_delisted)} found by this check)"
        if not s:
            return f"freshness: all {n} series within {lag}{told}"
        return f"freshness: {s} of {n} series lag more than {lag}{told}"

    def message(self, limit: int = 20) -> str:
        """The headline, the stale series (with why) and the delistings this check found: a notice's body."""
        lines = [self.headline()]
        lines += [f"stale: {r.describe()}" for r in self.stale[:limit]]
        if len(self.stale) > limit:
            lines.append(f"... and {len(self.stale) - limit} more (candleflow freshness)")
        lines += [f"newly delisted (reported once, not a failure): {r.describe()}" for r in self.newly_delisted]
        if self.vendor_note:
            lines.append(self.vendor_note)
        return "\n".join(lines)


def check_freshness(
    engine: sa.Engine,
    source: Provider[Any] | None,
    rows: list[SeriesFreshness],
    max_lag: int,
    *,
    flow_run_id: str | None = None,
    pace: Any = None,
) -> FreshnessReport:
    """The report of `rows` at `max_lag`; the stale series the vendor may have stopped listing are asked about
    (`source` telling delistings, at most ASK_AT_MOST a check), and what it says delisted is kept and reported."""
    stale = [r for r in rows if r.stale(max_lag)]
    note = ""
    if stale and source is not None and source.capabilities.tells_delistings:
        asked = list(dict.fromkeys(r.symbol for r in stale))[:ASK_AT_MOST]
        try:
            found = source.delistings(asked, pace or local_pace(source.capabilities.requests_per_second))
        except ProviderError as exc:
            found, note = {}, f"could not ask {source.name} which symbols it stopped listing: {exc}"
        stale_ids = {id(r) for r in stale}
        kept: dict[str, dt.date] = {}
        marked: list[SeriesFreshness] = []
        for r in rows:
            gone = found.get(r.symbol)
            if gone is not None and id(r) in stale_ids and (r.newest_session is None or r.newest_session <= gone):
                kept[r.symbol] = gone
                r = replace(r, reason=LagReason.DELISTED, detail="", delisted_on=gone, newly_delisted=True)
            marked.append(r)
        record_delistings(engine, rows[0].provider, kept, flow_run_id)
        rows = marked
    return FreshnessReport(laggards_first(rows), max_lag, note)


def universe_freshness(
    warehouse_url: str | None,
    source: Provider[Any],
    stored_as: str,
    symbols: Sequence[str],
    timeframes: Sequence[str],
    calendars: Mapping[str, str],
    max_lag: int,
    *,
    ask_vendor: bool = True,
    flow_run_id: str | None = None,
    now: pd.Timestamp | None = None,
) -> FreshnessReport:
    """The freshness report of a universe over its timeframes; the vendor is asked about delistings (when
    `ask_vendor`, it can tell, and its key is at hand; else the report says why not)."""
    from warehouse.engine import check_reachable

    engine = check_reachable(warehouse_url)
    rows: list[SeriesFreshness] = []
    for timeframe in timeframes:
        rows += measure_freshness(engine, stored_as, symbols, timeframe, calendars, now=now)
    asked: Provider[Any] | None = source if ask_vendor else None
    note = ""
    if asked is not None and asked.capabilities.tells_delistings and asked.settings.missing_keys():
        note = f"{source.name} was not asked which symbols it stopped listing: set {asked.settings.missing_keys()}"
        asked = None
    report = check_freshness(engine, asked, rows, max_lag, flow_run_id=flow_run_id)
    return replace(report, vendor_note=report.vendor_note or note) if note else report
