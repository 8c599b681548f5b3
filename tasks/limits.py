"""Prefect global concurrency limits, shared by every worker and flow run, used when they exist.

- `candleflow-provider-<name>`: a rate limit (slot decay = the vendor's request rate); each fetch takes a slot.
- `candleflow-warehouse-<backend>-<digest>`: a concurrency limit; each load holds a slot.

Create them with `candleflow setup` (deployments/setup.py; or `prefect gcl create`). They are not created on the fly:
an acquisition from threaded tasks is slow on Prefect 3.8 even with free slots (the lease-based release/re-acquire
delay, PrefectHQ/prefect#15618; the figure is in the README's Scale section), which would idle short chunk tasks
that need no limit, such as the synthetic provider's. SQLite serialises writers itself
(BEGIN IMMEDIATE) and PostgreSQL takes concurrent upserts of distinct chunks.
"""

from __future__ import annotations

import hashlib
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

from prefect.client.orchestration import get_client
from prefect.concurrency.sync import concurrency, rate_limit
from prefect.exceptions import ObjectNotFound

from warehouse.engine import parse_url, resolve_url


@dataclass(frozen=True)
class LimitNames:
    provider: str | None  # None: no such limit exists
    warehouse: str | None
    provider_burst: int = 1  # the provider limit's slots: requests a task may take at once


def provider_limit_name(provider: str) -> str:
    return f"candleflow-provider-{provider}"


def warehouse_limit_name(warehouse_url: str | None) -> str:
    url = parse_url(resolve_url(warehouse_url))
    # without the password: a run's URL leaves it out (it comes from the worker's environment), set-up's may not
    unique = url._replace(password=None).render_as_string(hide_password=False)
    digest = hashlib.blake2b(unique.encode(), digest_size=4).hexdigest()
    return f"candleflow-warehouse-{url.get_backend_name()}-{digest}"


def configured_limits(provider: str, warehouse_url: str | None) -> LimitNames:
    """The limits that exist for this provider and warehouse (None for each that does not)."""
    wanted = [provider_limit_name(provider), warehouse_limit_name(warehouse_url)]
    found: list[str | None] = []
    burst = 1
    with get_client(sync_client=True) as client:
        for name in wanted:
            try:
                limit = client.read_global_concurrency_limit_by_name(name)
                found.append(name)
                if name == wanted[0]:
                    burst = max(1, int(limit.limit))
            except ObjectNotFound:
                found.append(None)
    return LimitNames(provider=found[0], warehouse=found[1], provider_burst=burst)


class PrefectGates:
    """The batch engine's gates (ingest.Gates) as Prefect's global concurrency limits: each request takes a slot
    of the provider's rate limit, as many at a time as the limit allows (one call to the Prefect server per burst
    instead of one per request); a batch's loads hold one slot of the warehouse's limit."""

    def __init__(self, names: LimitNames) -> None:
        self.names = names
        self.burst = names.provider_burst

    def take_requests(self, count: int) -> None:
        if self.names.provider and count > 0:
            rate_limit(self.names.provider, occupy=count)

    def hold_warehouse(self) -> AbstractContextManager[object]:
        limit = self.names.warehouse
        return concurrency(limit, occupy=1) if limit else nullcontext()
