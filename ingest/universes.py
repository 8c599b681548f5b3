"""Named universes refreshed from a provider's reference data, free of Prefect: the tickers a provider lists for a
query, checked by its symbol rule and kept in the warehouse under a name (warehouse/universes.py), replacing what
the name held in one transaction. The CLI calls it directly; tasks/universes.py wraps it in a task that takes the
provider's shared rate limit for each page (flows/universes.py: the `refresh_universe` flow)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from candleflow.errors import BadInputError
from candleflow.universes import ReferenceQuery
from providers import get_provider
from providers.base import Provider
from warehouse.universes import StoredUniverse, save_universe


@dataclass(frozen=True)
class Refreshed:
    universe: StoredUniverse
    before: int | None  # how many members it had, None when it is new
    added: tuple[str, ...]
    dropped: tuple[str, ...]
    seconds: float

    def change(self) -> str:
        """`new`, or `was 503: 2 added, 1 dropped (XYZ)`."""
        if self.before is None:
            return "new"
        shown = f" ({', '.join(self.dropped[:10])}{', ...' if len(self.dropped) > 10 else ''})" if self.dropped else ""
        return f"was {self.before}: {len(self.added)} added, {len(self.dropped)} dropped{shown}"

    def describe(self) -> str:
        """One line: what the universe holds now, from what, how it changed, in how long."""
        u = self.universe
        return (
            f"universe {u.name}: {u.members} tickers from {u.definition} ({self.change()}) in {self.seconds:.1f} s; "
            f"use --symbols universe:{u.name}"
        )


def listing_source(provider: str, options: dict[str, Any] | None) -> Provider[Any]:
    """The provider a universe is refreshed from, its keys checked: BadInputError, before any request, when it
    cannot list symbols or has no key in the environment."""
    source = get_provider(provider, options)
    if not source.capabilities.lists_symbols:
        source.list_symbols(ReferenceQuery())  # raises, naming the providers that can
    missing = source.settings.missing_keys()
    if missing:
        raise BadInputError(f"provider {provider} has no key: set {missing}; nothing was asked or written")
    return source


def local_pace(requests_per_second: float) -> Callable[[int], None]:
    """Spaces requests at the vendor's rate within this process (a refresh from the command line)."""
    last = [time.monotonic()]

    def pace(n: int) -> None:
        due = last[0] + n / requests_per_second
        now = time.monotonic()
        if due > now:
            time.sleep(due - now)
        last[0] = max(due, now)

    return pace


def refresh_universe(
    name: str,
    source: Provider[Any],
    query: ReferenceQuery,
    warehouse_url: str | None,
    previous: tuple[str, ...] | None,
    pace: Callable[[int], None] | None = None,
) -> Refreshed:
    """List `source`'s tickers for `query` and keep them as universe `name`; `previous` is what the name held. An
    empty answer is refused (a filter that matches nothing, or a key that sees nothing), so a refresh never empties
    a universe a schedule depends on."""
    started = time.perf_counter()
    listed = source.list_symbols(query.check(), pace)
    if not listed:
        raise BadInputError(
            f"provider {source.name} lists no tickers for {query.describe()}: check the filters; universe {name!r} "
            "was left as it was"
        )
    rule = source.capabilities.symbol_rule
    symbols = [rule.check(s) for s in listed]
    stored = save_universe(warehouse_url, name, f"{source.name} {query.describe()}", symbols)
    old = set(previous or ())
    added = tuple(s for s in stored.symbols if s not in old)
    dropped = tuple(sorted(old - set(stored.symbols)))
    before = len(previous) if previous is not None else None
    return Refreshed(stored, before, added, dropped, time.perf_counter() - started)
