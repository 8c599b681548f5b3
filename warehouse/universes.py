"""Named universes in the warehouse: a name, what it was refreshed from, when, and its tickers. A refresh replaces
a universe's members in one transaction, so a run resolving it at the same moment sees the old list or the new
one, never half of each."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa

from candleflow.errors import BadInputError
from warehouse.engine import check_reachable, safe_url
from warehouse.queries import has_schema
from warehouse.schema import ensure_schema, universe_members, universes
from warehouse.utc import to_utc

_BATCH = 5_000


@dataclass(frozen=True)
class StoredUniverse:
    name: str
    definition: str
    refreshed_at: dt.datetime
    members: int
    symbols: tuple[str, ...] = ()  # empty in a listing


def save_universe(url: str | None, name: str, definition: str, symbols: Sequence[str]) -> StoredUniverse:
    """Keep `symbols` as universe `name`, replacing what it held; returns it as stored."""
    engine = check_reachable(url, writes=True)
    ensure_schema(engine)
    unique = list(dict.fromkeys(symbols))
    refreshed = dt.datetime.now(dt.UTC)
    with engine.begin() as conn:
        conn.execute(sa.delete(universe_members).where(universe_members.c.universe == name))
        conn.execute(sa.delete(universes).where(universes.c.name == name))
        conn.execute(
            sa.insert(universes),
            {"name": name, "definition": definition, "members": len(unique), "refreshed_at": refreshed},
        )
        for i in range(0, len(unique), _BATCH):
            conn.execute(sa.insert(universe_members), [{"universe": name, "symbol": s} for s in unique[i : i + _BATCH]])
    return StoredUniverse(name, definition, refreshed, len(unique), tuple(unique))


def load_universe(url: str | None, name: str) -> StoredUniverse:
    """Universe `name`, or BadInputError naming the universes kept and how to make this one."""
    engine = check_reachable(url)
    kept = list_universes(url)
    found = next((u for u in kept if u.name == name), None)
    if found is None:
        known = ", ".join(u.name for u in kept) or "none"
        raise BadInputError(
            f"unknown universe {name!r} in warehouse {safe_url(engine.url)} (kept: {known}): make it with "
            f"`candleflow universe refresh {name} --provider polygon ...` (see `candleflow universe refresh --help`), "
            "or give the tickers or a file of them (@FILE)"
        )
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(universe_members.c.symbol)
            .where(universe_members.c.universe == name)
            .order_by(universe_members.c.symbol)
        ).scalars()
        return StoredUniverse(found.name, found.definition, found.refreshed_at, found.members, tuple(rows))


def list_universes(url: str | None) -> list[StoredUniverse]:
    """The universes kept (without their members), by name; none in a warehouse that has no universes table."""
    engine = check_reachable(url)
    if not has_schema(engine, (universes.name, universe_members.name)):
        return []
    with engine.connect() as conn:
        rows = conn.execute(sa.select(universes).order_by(universes.c.name)).all()
    return [StoredUniverse(r.name, r.definition, to_utc(r.refreshed_at).to_pydatetime(), int(r.members)) for r in rows]


def members_of(url: str | None, name: str) -> tuple[str, ...] | None:
    """The tickers universe `name` holds, or None when it is not kept (a refresh reports what it added and dropped)."""
    return load_universe(url, name).symbols if any(u.name == name for u in list_universes(url)) else None
