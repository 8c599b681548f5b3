"""Prefect global concurrency limits: one rate limit per provider, one concurrency limit per warehouse,
shared by every worker and flow run. Created here when missing; existing limits (tuned by an operator, or
by deployments/) are left as they are."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

from warehouse.engine import parse_url, resolve_url


@dataclass(frozen=True)
class LimitNames:
    provider: str
    warehouse: str


def limit_names(provider: str, warehouse_url: str | None) -> LimitNames:
    url = parse_url(resolve_url(warehouse_url))
    digest = hashlib.blake2b(url.render_as_string(hide_password=True).encode(), digest_size=4).hexdigest()
    return LimitNames(
        provider=f"candleflow-provider-{provider}",
        warehouse=f"candleflow-warehouse-{url.get_backend_name()}-{digest}",
    )


def warehouse_slots(warehouse_url: str | None) -> int:
    """SQLite has one writer at a time; a server database takes a few concurrent loads."""
    return 1 if parse_url(resolve_url(warehouse_url)).get_backend_name() == "sqlite" else 4


def ensure_limits(names: LimitNames, provider_rate: float, warehouse_slots: int) -> None:
    """Create the run's limits if they do not exist yet."""
    wanted = [
        GlobalConcurrencyLimitCreate(
            name=names.provider, limit=max(1, int(provider_rate)), slot_decay_per_second=provider_rate
        ),
        GlobalConcurrencyLimitCreate(name=names.warehouse, limit=warehouse_slots),
    ]
    with get_client(sync_client=True) as client:
        for limit in wanted:
            try:
                client.read_global_concurrency_limit_by_name(limit.name)
            except ObjectNotFound:
                try:
                    client.create_global_concurrency_limit(limit)
                except ObjectAlreadyExists:  # another run created it meanwhile
                    pass
