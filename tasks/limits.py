"""Prefect global concurrency limits, shared by every worker and flow run, used when they exist.

- `candleflow-provider-<name>`: a rate limit (slot decay = the vendor's request rate); each fetch takes a slot.
- `candleflow-warehouse-<backend>-<digest>`: a concurrency limit; each load holds a slot.

Create them with `python -m deployments.limits` (or `prefect gcl create`). They are not created on the fly:
on Prefect 3.8 every acquisition from threaded tasks cost 2-7 s here even with free slots (measured against
the temporary server; the lease-based release/re-acquire delay is PrefectHQ/prefect#15618), which would idle
short chunk tasks that need no limit, such as the synthetic provider's. SQLite serialises writers itself
(BEGIN IMMEDIATE) and PostgreSQL takes concurrent upserts of distinct chunks.
"""

from __future__ import annotations

import hashlib
from contextlib import AbstractContextManager, nullcontext, suppress
from dataclasses import dataclass

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.concurrency.sync import concurrency, rate_limit
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

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


def create_limits(
    provider: str, warehouse_url: str | None, *, requests_per_second: float, warehouse_slots: int
) -> LimitNames:
    """Create the provider's rate limit and the warehouse's concurrency limit, leaving existing ones as they are."""
    names = LimitNames(
        provider_limit_name(provider), warehouse_limit_name(warehouse_url), max(1, round(requests_per_second))
    )
    wanted = [
        GlobalConcurrencyLimitCreate(
            name=str(names.provider),
            limit=max(1, round(requests_per_second)),
            slot_decay_per_second=requests_per_second,
        ),
        GlobalConcurrencyLimitCreate(name=str(names.warehouse), limit=warehouse_slots),
    ]
    with get_client(sync_client=True) as client:
        for limit in wanted:
            try:
                client.read_global_concurrency_limit_by_name(limit.name)
            except ObjectNotFound:
                with suppress(ObjectAlreadyExists):  # another process created it meanwhile
                    client.create_global_concurrency_limit(limit)
    return names


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
