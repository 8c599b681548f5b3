"""Tasks that ask a provider about its sources before any bars are fetched: which dates are published (and in
which version), and what the vendor charges for a plan."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from candleflow.model import Chunk
from candleflow.timeframes import get_timeframe
from providers import get_provider
from providers.base import request_for
from providers.errors import TransientProviderError
from tasks.ingest import honour_retry_after, retry_only_transient
from tasks.secrets import with_secrets


@task(name="source_versions", cache_policy=NO_CACHE, retry_condition_fn=retry_only_transient)
def source_versions_task(
    provider: str, provider_options: Mapping[str, Any] | None, timeframe: str, dates: list[dt.date]
) -> dict[dt.date, str | None]:
    """Each date's source version (None: not published yet), for providers that publish versioned files."""
    source = get_provider(provider, with_secrets(provider, provider_options))
    try:
        return source.source_versions(get_timeframe(timeframe), dates)
    except TransientProviderError as exc:
        honour_retry_after(exc)
        raise


@task(name="estimate_cost", cache_policy=NO_CACHE, retry_condition_fn=retry_only_transient)
def estimate_cost_task(provider: str, provider_options: Mapping[str, Any] | None, groups: list[list[Chunk]]) -> float:
    """The vendor's quote in US dollars for fetching `groups` (one request per group), before any download."""
    source = get_provider(provider, with_secrets(provider, provider_options))
    try:
        return source.estimate_cost([request_for(group) for group in groups])
    except TransientProviderError as exc:
        honour_retry_after(exc)
        raise
