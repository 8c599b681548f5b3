"""What watching the warehouse reads and keeps: the symbols vendors stopped listing (found by freshness checks),
the end of each flow run (for metrics), and the counts metrics export. Read-only but for the two recorders."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pandas as pd
import sqlalchemy as sa

from warehouse.dialects import dialect_for
from warehouse.queries import has_schema
from warehouse.schema import bars, delistings, ensure_schema, ingest_ledger, quarantine, run_history
from warehouse.utc import to_utc


def known_delistings(engine: sa.Engine, provider: str, symbols: Sequence[str]) -> dict[str, dt.date]:
    """The symbols of `provider` recorded as delisted, with their delisting date."""
    if not symbols or not has_schema(engine, (delistings.name,)):
        return {}
    c = delistings.c
    query = sa.select(c.symbol, c.delisted_on).where(
        c.provider == provider, dialect_for(engine).in_list(c.symbol, list(symbols))
    )
    with engine.connect() as conn:
        return {symbol: to_utc(on).date() for symbol, on in conn.execute(query).all()}


def record_delistings(engine: sa.Engine, provider: str, found: Mapping[str, dt.date], flow_run_id: str | None) -> None:
    """Keep what a check found delisted (replacing an older record of the same symbol), in one transaction."""
    if not found:
        return
    ensure_schema(engine)
    now = dt.datetime.now(dt.UTC)
    c = delistings.c
    with engine.begin() as conn:
        conn.execute(
            sa.delete(delistings).where(c.provider == provider, dialect_for(engine).in_list(c.symbol, list(found)))
        )
        conn.execute(
            sa.insert(delistings),
            [
                {
                    "provider": provider,
                    "symbol": symbol,
                    "delisted_on": pd.Timestamp(on).tz_localize("UTC").to_pydatetime(),
                    "noticed_at": now,
                    "flow_run_id": flow_run_id,
                }
                for symbol, on in found.items()
            ],
        )


@dataclass(frozen=True)
class RunRecord:
    flow_run_id: str
    flow: str
    run_name: str | None
    ok: bool
    ended_at: pd.Timestamp
    seconds: float
    chunks: int
    bars_written: int
    fetch_seconds: float
    validate_seconds: float
    load_seconds: float


def record_run(engine: sa.Engine, record: RunRecord) -> None:
    """Keep the end of a flow run (a rerun of the same run replaces its row)."""
    ensure_schema(engine)
    values = {**record.__dict__, "ended_at": record.ended_at.to_pydatetime()}
    with engine.begin() as conn:
        conn.execute(sa.delete(run_history).where(run_history.c.flow_run_id == record.flow_run_id))
        conn.execute(sa.insert(run_history), values)


def last_runs(engine: sa.Engine, *, ok_only: bool = True) -> list[RunRecord]:
    """The newest recorded run of each flow (completed ones only, by default)."""
    if not has_schema(engine, (run_history.name,)):
        return []
    c = run_history.c
    where = c.ok.is_(True) if ok_only else sa.true()
    newest = sa.select(c.flow, sa.func.max(c.ended_at).label("ended_at")).where(where).group_by(c.flow).subquery()
    query = (
        sa.select(run_history)
        .join(newest, sa.and_(c.flow == newest.c.flow, c.ended_at == newest.c.ended_at))
        .where(where)
        .order_by(c.flow)
    )
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    seen: dict[str, RunRecord] = {}
    for r in rows:
        seen.setdefault(
            r.flow,
            RunRecord(
                r.flow_run_id,
                r.flow,
                r.run_name,
                bool(r.ok),
                to_utc(r.ended_at),
                float(r.seconds),
                int(r.chunks),
                int(r.bars_written),
                float(r.fetch_seconds),
                float(r.validate_seconds),
                float(r.load_seconds),
            ),
        )
    return list(seen.values())


def quarantine_counts(engine: sa.Engine) -> list[tuple[str, str, int]]:
    """Quarantined rows per (provider, timeframe)."""
    if not has_schema(engine, (quarantine.name,)):
        return []
    c = quarantine.c
    query = sa.select(c.provider, c.timeframe, sa.func.count()).group_by(c.provider, c.timeframe)
    with engine.connect() as conn:
        return [(str(p), str(t), int(n)) for p, t, n in conn.execute(query).all()]


def chunk_status_counts(engine: sa.Engine) -> list[tuple[str, str, str, int]]:
    """Ledger rows per (provider, timeframe, status)."""
    if not has_schema(engine, (ingest_ledger.name,)):
        return []
    c = ingest_ledger.c
    query = sa.select(c.provider, c.timeframe, c.status, sa.func.count()).group_by(c.provider, c.timeframe, c.status)
    with engine.connect() as conn:
        return [(str(p), str(t), str(s), int(n)) for p, t, s, n in conn.execute(query).all()]


def bar_totals(engine: sa.Engine) -> pd.DataFrame:
    """Per series: provider, symbol, timeframe, bars, newest (UTC): the one pass over `bars` metrics need."""
    if not has_schema(engine, (bars.name,)):
        return pd.DataFrame(columns=["provider", "symbol", "timeframe", "bars", "newest"])
    c = bars.c
    query = sa.select(c.provider, c.symbol, c.timeframe, sa.func.count().label("bars"), sa.func.max(c.ts)).group_by(
        c.provider, c.symbol, c.timeframe
    )
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    frame = pd.DataFrame(rows, columns=["provider", "symbol", "timeframe", "bars", "newest"])
    frame["newest"] = [to_utc(v) for v in frame["newest"]]
    return frame
