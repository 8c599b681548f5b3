"""Read-side queries: the ledger, watermarks and per-session bar counts."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import pandas as pd
import sqlalchemy as sa

from candleflow.model import EVERY_SYMBOL, LedgerEntry, LedgerStatus, every_ticker
from candleflow.sessions import DEFAULT_CALENDAR, SessionHours, schedule, sessions_of
from candleflow.timeframes import Timeframe, get_timeframe
from warehouse.databases import is_missing_database
from warehouse.dialects import dialect_for
from warehouse.dialects.sqlite import sqlite_path
from warehouse.engine import check_reachable
from warehouse.schema import bars, ingest_ledger, quarantine
from warehouse.utc import to_utc

BAR_TABLES = (bars.name, ingest_ledger.name, quarantine.name)


def has_schema(engine: sa.Engine, names: Sequence[str] = BAR_TABLES) -> bool:
    """Whether the warehouse holds candleflow's tables (by default those of bars; tables added later, such as the
    universes, are made by the next run that writes). A SQLite file or PostgreSQL database that does not exist
    yet holds none, and is not created by asking (a dry run or `status` on a new warehouse leaves nothing behind)."""
    path = sqlite_path(engine.url) if engine.dialect.name == "sqlite" else None
    if path is not None and not path.exists():
        return False
    try:
        found = set(sa.inspect(engine).get_table_names())
    except sa.exc.DBAPIError as exc:
        if is_missing_database(exc):  # a PostgreSQL database the run's first load creates
            return False
        raise
    return all(t in found for t in names)


def _series_filter(
    engine: sa.Engine,
    table: sa.Table,
    provider: str | None,
    symbols: Sequence[str] | None,
    timeframe: str | None,
) -> sa.ColumnElement[bool]:
    clauses = []
    if provider:
        clauses.append(table.c.provider == provider)
    if symbols:
        clauses.append(dialect_for(engine).in_list(table.c.symbol, symbols))
    if timeframe:
        clauses.append(table.c.timeframe == timeframe)
    return sa.and_(sa.true(), *clauses)


def read_ledger(
    engine: sa.Engine,
    provider: str | None = None,
    symbols: Sequence[str] | None = None,
    timeframe: str | None = None,
    *,
    count_bars: bool = False,
    since: pd.Timestamp | None = None,
) -> list[LedgerEntry]:
    """The ledger rows of the series (with `since`, only those whose window ends at or after it); with
    `count_bars`, each with the bars its window holds now (an index range count per row), so rows whose bars were
    deleted behind the ledger's back can be told apart."""
    c = ingest_ledger.c
    b = bars.c

    def counted(*of_symbol: sa.ColumnElement[bool]) -> sa.ScalarSelect[Any]:
        window = (b.provider == c.provider, b.timeframe == c.timeframe, b.ts >= c.window_start, b.ts < c.window_end)
        return sa.select(sa.func.count()).select_from(bars).where(*of_symbol, *window).scalar_subquery()

    present: sa.ColumnElement[Any] = sa.null()
    if count_bars:  # a row of every ticker (`--symbols ALL`) counts its window's bars whatever their ticker
        present = sa.case((c.symbol == EVERY_SYMBOL, counted()), else_=counted(b.symbol == c.symbol))
    query = sa.select(
        c.provider,
        c.symbol,
        c.timeframe,
        c.window_start,
        c.window_end,
        c.status,
        c.rows,
        c.checksum,
        c.adjustment,
        c.source_version,
        c.complete_through,
        present.label("present"),
        c.error,
    )
    with engine.connect() as conn:
        where = _series_filter(engine, ingest_ledger, provider, symbols, timeframe)
        if since is not None:
            where = sa.and_(where, c.window_end >= since.to_pydatetime())
        rows = conn.execute(query.where(where)).all()
    return [
        LedgerEntry(
            r.provider,
            r.symbol,
            r.timeframe,
            to_utc(r.window_start),
            to_utc(r.window_end),
            LedgerStatus(r.status),
            r.rows,
            r.checksum,
            r.adjustment,
            r.source_version,
            None if r.complete_through is None else to_utc(r.complete_through),
            None if r.present is None else int(r.present),
            r.error,
        )
        for r in rows
    ]


def read_watermarks(
    engine: sa.Engine, provider: str, symbols: Sequence[str], timeframe: str
) -> dict[str, pd.Timestamp]:
    """Newest bar per symbol for (provider, timeframe); symbols with no bars are absent. For EVERY_SYMBOL alone
    (`--symbols ALL`), the newest bar of any ticker (the window index finds it)."""
    c = bars.c
    if every_ticker(symbols):
        newest = sa.select(sa.func.max(c.ts)).where(c.provider == provider, c.timeframe == timeframe)
        with engine.connect() as conn:
            ts = conn.execute(newest).scalar_one_or_none()
        return {} if ts is None else {EVERY_SYMBOL: to_utc(ts)}
    query = (
        sa.select(c.symbol, sa.func.max(c.ts))
        .where(_series_filter(engine, bars, provider, symbols, timeframe))
        .group_by(c.symbol)
    )
    with engine.connect() as conn:
        return {symbol: to_utc(ts) for symbol, ts in conn.execute(query).all() if ts is not None}


def series_summary(
    engine: sa.Engine,
    provider: str | None = None,
    symbols: Sequence[str] | None = None,
    timeframe: str | None = None,
) -> pd.DataFrame:
    """One row per (provider, symbol, timeframe): bar count, first and last bar."""
    c = bars.c
    query = (
        sa.select(
            c.provider,
            c.symbol,
            c.timeframe,
            sa.func.count().label("bars"),
            sa.func.min(c.ts).label("first"),
            sa.func.max(c.ts).label("last"),
        )
        .where(_series_filter(engine, bars, provider, symbols, timeframe))
        .group_by(c.provider, c.symbol, c.timeframe)
        .order_by(c.provider, c.symbol, c.timeframe)
    )
    with engine.connect() as conn:
        frame = pd.DataFrame(
            conn.execute(query).all(), columns=["provider", "symbol", "timeframe", "bars", "first", "last"]
        )
    for col in ("first", "last"):
        frame[col] = pd.to_datetime(frame[col], utc=True)
    return frame


def ledger_counts(
    engine: sa.Engine,
    provider: str | None = None,
    symbols: Sequence[str] | None = None,
    timeframe: str | None = None,
) -> pd.DataFrame:
    """Chunks per (provider, symbol, timeframe, status)."""
    c = ingest_ledger.c
    query = (
        sa.select(c.provider, c.symbol, c.timeframe, c.status, sa.func.count().label("chunks"))
        .where(_series_filter(engine, ingest_ledger, provider, symbols, timeframe))
        .group_by(c.provider, c.symbol, c.timeframe, c.status)
    )
    with engine.connect() as conn:
        return pd.DataFrame(conn.execute(query).all(), columns=["provider", "symbol", "timeframe", "status", "chunks"])


def bars_per_session_of(
    engine: sa.Engine,
    provider: str,
    symbols: Sequence[str],
    timeframe: str,
    start: pd.Timestamp,
    end: pd.Timestamp,
    calendar: str = DEFAULT_CALENDAR,
    hours: SessionHours = "extended",
) -> dict[str, dict[dt.date, int]]:
    """Bar count per symbol and session for the session dates of [start, end), for many series of one provider
    and timeframe in one query; symbols without bars are absent. Daily bars count for their date; intraday bars
    for the session whose `hours` hold them, by time, not by UTC date: a session that spans UTC midnight counts
    as one (bars from the UTC day before `start` included, where a session may open), and bars outside every
    session count for none. With `regular` hours, pre- and post-market bars count for none either: a session's
    count is then how many of its regular intervals have their bar (bars are unique and on the grid)."""
    c = bars.c
    tf = get_timeframe(timeframe)
    out: dict[str, dict[dt.date, int]] = {}
    every = every_ticker(symbols)  # every ticker's bars together, counted under EVERY_SYMBOL
    if not tf.intraday and symbols and not every:
        # Daily bars are keyed by their session date, one per date: a series with as many bars in the range as
        # the calendar has sessions there is complete, and needs no per-date rows (a 5-year backfill of 500
        # symbols is 629,000 of them). Only the others are counted date by date.
        sched = schedule(start.date(), (end - pd.Timedelta(days=1)).date(), calendar)
        sched = sched[sched["close"] <= pd.Timestamp.now(tz="UTC")]  # a session still open has no daily bar yet
        dates = [d.date() for d in sched.index]
        window = (c.ts >= start.to_pydatetime(), c.ts < end.to_pydatetime())
        totals = sa.select(c.symbol, sa.func.count()).where(
            _series_filter(engine, bars, provider, symbols, timeframe), *window
        )
        with engine.connect() as conn:
            counted = dict(conn.execute(totals.group_by(c.symbol)).tuples().all())
        whole = [symbol for symbol, n in counted.items() if n == len(dates)]
        out = {str(symbol): dict.fromkeys(dates, 1) for symbol in whole}
        symbols = [symbol for symbol in counted if symbol not in set(whole)]
        if not symbols:
            return out
    elif tf.intraday:
        start = start - pd.Timedelta(days=1)
    dialect = dialect_for(engine)
    bucket = (dialect.utc_hour(c.ts) if tf.intraday else dialect.utc_date(c.ts)).label("bucket")
    cuts = _regular_cuts(start, end, tf, calendar) if tf.intraday and hours == "regular" else []
    parts = [sa.case(*((dialect.utc_minute(c.ts) < m, i) for i, m in enumerate(cuts)), else_=len(cuts))] if cuts else []
    symbol = sa.literal(EVERY_SYMBOL).label("symbol") if every else c.symbol
    query = (
        sa.select(symbol, bucket, *parts, sa.func.count())
        .where(
            _series_filter(engine, bars, provider, None if every else symbols, timeframe),
            c.ts >= start.to_pydatetime(),
            c.ts < end.to_pydatetime(),
        )
        .group_by(*([] if every else [c.symbol]), bucket, *parts)
    )
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    if not rows:
        return out
    columns = ["symbol", "bucket", *(["part"] if cuts else []), "bars"]
    frame = pd.DataFrame([tuple(row) for row in rows], columns=columns)  # plain tuples: fast
    stamps = pd.Series(pd.to_datetime(frame["bucket"]).dt.tz_localize(None).dt.tz_localize("UTC"))
    if cuts:  # each part of an hour lies wholly inside or outside the regular session: its first bar says which
        offsets = pd.to_timedelta(pd.Series([0, *cuts])[frame["part"].to_numpy()].to_numpy(), unit="min")
        sessions = sessions_of(stamps + offsets, tf, calendar, "regular")
    elif tf.intraday:  # an hour's bars belong to the session its hour overlaps (hours never straddle two sessions)
        sessions = sessions_of(stamps, get_timeframe("1h"), calendar, hours)
    else:
        sessions = stamps.dt.tz_localize(None)
    frame["session"] = sessions.to_numpy()
    frame = frame.dropna(subset=["session"])
    counted = frame.groupby(["symbol", "session"])["bars"].sum().reset_index()
    days = pd.DatetimeIndex(counted["session"]).date
    for symbol, day, n in zip(counted["symbol"].to_numpy(), days, counted["bars"].to_numpy(), strict=True):
        out.setdefault(str(symbol), {})[day] = int(n)
    return out


def _regular_cuts(start: pd.Timestamp, end: pd.Timestamp, tf: Timeframe, calendar: str) -> list[int]:
    """The minutes past the UTC hour where, for some session of [start, end), a bar of `tf` starts or stops
    belonging to the regular session (its open and close, its break), sorted and without 0: the hour's parts
    between them hold bars of one kind only, so counting bars per part tells regular bars from the rest."""
    sched = schedule((start - pd.Timedelta(days=1)).date(), end.date(), calendar)
    step = tf.step
    edges = [
        sched["open"].dt.floor(step),
        sched["close"].dt.ceil(step),
        sched["break_start"].dt.ceil(step),
        sched["break_end"].dt.floor(step),
    ]
    minutes = pd.concat(edges).dropna().dt.minute
    return sorted(int(m) for m in minutes.unique() if m)


def ledger_of(
    warehouse_url: str | None,
    provider: str,
    symbols: Sequence[str],
    timeframe: str,
    since: pd.Timestamp | None = None,
) -> list[LedgerEntry]:
    """The ledger rows of the series (those ending at or after `since`, when given), with the bars each window
    holds; none for a warehouse without tables yet (a new warehouse, or a dry run before the first load: nothing is
    created to find that out)."""
    engine = check_reachable(warehouse_url)
    if not has_schema(engine):
        return []
    return read_ledger(engine, provider, symbols, timeframe, count_bars=True, since=since)
