"""Coverage of a run's series as a Prefect task: what `candleflow gaps` reports, for the flows to repair what is
missing and to publish a symbol-by-month grid (the reading itself: warehouse.coverage)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from prefect import task
from prefect.cache_policies import NO_CACHE

from candleflow.coverage import SessionCoverage
from warehouse import coverage


@task(name="measure_coverage", cache_policy=NO_CACHE)
def measure_coverage(
    warehouse_url: str | None,
    provider: str,
    symbols: Sequence[str],
    timeframe: str,
    start: dt.date,
    end: dt.date,
    *,
    calendar: str,
    partial: bool,
) -> dict[str, list[SessionCoverage]]:
    """Every closed session of `calendar` in start..end, per symbol, with its state and reason."""
    return coverage.measure_coverage(
        warehouse_url, provider, symbols, timeframe, start, end, calendar=calendar, partial=partial
    )
