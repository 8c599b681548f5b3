"""The task that refreshes a named universe from a provider's reference data (ingest.universes), each page of the
vendor's answer after the first taking a slot of the provider's shared rate limit, so a refresh and the
backfills running beside it stay within the vendor's rate together."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.concurrency.sync import rate_limit

from candleflow.universes import ReferenceQuery
from ingest.universes import Refreshed, listing_source, local_pace, refresh_universe
from providers.errors import TransientProviderError
from tasks.ingest import honour_retry_after, retry_only_transient
from tasks.limits import configured_limits
from tasks.secrets import with_secrets
from warehouse.universes import members_of


@task(name="refresh_universe", cache_policy=NO_CACHE, retry_condition_fn=retry_only_transient)
def refresh_universe_task(
    name: str,
    provider: str,
    provider_options: Mapping[str, Any] | None,
    query: ReferenceQuery,
    warehouse_url: str | None,
) -> Refreshed:
    """List the provider's tickers for `query` and keep them as universe `name`, replacing what it held."""
    source = listing_source(provider, with_secrets(provider, provider_options))
    limit = configured_limits(provider, warehouse_url).provider
    pace: Callable[[int], None] = (
        (lambda n: rate_limit(limit, occupy=n)) if limit else local_pace(source.capabilities.requests_per_second)
    )
    try:
        return refresh_universe(name, source, query, warehouse_url, members_of(warehouse_url, name), pace)
    except TransientProviderError as exc:
        honour_retry_after(exc)
        raise
