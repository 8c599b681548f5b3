"""The retry rules: which errors a retry can help, and how long a vendor asked to wait before one."""

from __future__ import annotations

from candleflow.settings import run_settings
from providers.errors import TransientProviderError
from warehouse.errors import WarehouseConnectionError, explain


def is_transient(error: BaseException) -> bool:
    """A retry can help: the provider said so, or the warehouse connection dropped or timed out
    (warehouse.errors.WarehouseConnectionError). Never for validation failures, terminal provider errors,
    constraint violations, a warehouse that refuses every write alike (disk full, a SQLite file locked beyond the
    busy timeout, which already was the wait) or our own bugs."""
    if isinstance(error, TransientProviderError):
        return True
    return isinstance(explain(error), WarehouseConnectionError)


def retry_after_seconds(error: TransientProviderError) -> float:
    """How long to hold a request the vendor answered with Retry-After before it is retried, capped by
    CANDLEFLOW_MAX_RETRY_AFTER_SECONDS; 0 when it did not say. Prefect's retry delays are fixed per task, so this
    is where a per-response delay can be honoured; Prefect's own backoff adds to it."""
    if not error.retry_after:
        return 0.0
    return float(min(error.retry_after, run_settings().max_retry_after_seconds))
