"""Coverage of a run's series as a Prefect task: what `candleflow gaps` reports, for the flows to repair what is
missing and to publish a symbol-by-month grid (the reading itself: warehouse.coverage)."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from warehouse import coverage

measure_coverage = task(name="measure_coverage", cache_policy=NO_CACHE)(coverage.measure_coverage)
