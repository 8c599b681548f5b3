"""Run planned chunks as Prefect tasks and gather what they did. Called from inside a flow."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from prefect.futures import PrefectFuture, as_completed
from prefect.logging import get_run_logger
from prefect.tasks import exponential_backoff

from candleflow.errors import BudgetExceededError, IncompleteRunError
from candleflow.inputs import parse_symbols
from candleflow.model import Chunk, ChunkResult, LedgerStatus
from candleflow.planning import group_chunks, plan_chunks, session_of
from candleflow.report import RunSummary
from candleflow.sessions import DEFAULT_CALENDAR, get_calendar, schedule
from candleflow.settings import run_settings
from candleflow.timeframes import ChunkPeriod, Timeframe, get_timeframe
from flows import progress
from providers import check_provider_name, get_provider
from providers.base import PricedSource, Provider, VersionedSource
from tasks.ingest import OnInvalid, current_flow_run_id, ingest_chunk, ingest_chunk_group
from tasks.limits import configured_limits
from tasks.reporting import advance_progress, publish_summary, start_progress
from tasks.sources import estimate_cost_task, source_versions_task
from tasks.warehouse import record_chunk_failure


@dataclass(frozen=True)
class SeriesRequest:
    provider_name: str
    provider: Provider  # built from the options, holding no key: it only answers what kind of provider it is
    provider_options: Mapping[str, Any]
    timeframe: Timeframe
    symbols: list[str]
    calendar: str  # the exchange calendar the provider's sessions follow


def check_series_request(
    provider: str, symbols: list[str], timeframe: str, provider_options: Mapping[str, Any] | None
) -> SeriesRequest:
    """Check a flow's series inputs before anything runs (they may come from the Prefect UI's run form);
    raises BadInputError naming the bad input."""
    tf = get_timeframe(timeframe)
    checked = parse_symbols(symbols)
    check_provider_name(provider)
    options = dict(provider_options or {})
    built = get_provider(provider, options)  # the provider's own options model rejects bad options
    return SeriesRequest(provider, built, options, tf, checked, options.get("calendar", DEFAULT_CALENDAR))


def plan_series(series: SeriesRequest, symbols: list[str], start: dt.date, end: dt.date) -> list[Chunk]:
    """The chunks for `symbols` over the session dates start..end, cut the way the provider serves them."""
    period = series.provider.chunk_period
    sessions: list[dt.date] = []
    if period is ChunkPeriod.SESSION:
        sessions = [d.date() for d in schedule(start, end, series.calendar).index]
    tz = str(get_calendar(series.calendar).tz)
    return plan_chunks(
        series.provider_name, symbols, series.timeframe, start, end, period=period, sessions=sessions, tz=tz
    )


def published_versions(series: SeriesRequest, chunks: Sequence[Chunk]) -> dict[dt.date, str | None] | None:
    """For providers that publish one versioned file per date: each planned date's current version (None when
    not published yet). None for other providers."""
    if not isinstance(series.provider, VersionedSource) or not chunks:
        return None
    dates = sorted({session_of(c) for c in chunks})
    return source_versions_task.with_options(retries=run_settings().retries)(
        series.provider_name, series.provider_options, series.timeframe.name, dates
    )


def drop_unpublished(
    summary: RunSummary, chunks: Sequence[Chunk], versions: Mapping[dt.date, str | None] | None
) -> list[Chunk]:
    """Chunks whose date has no file yet are not fetched and not errors: the summary lists them."""
    if versions is None:
        return list(chunks)
    summary.not_published = [c for c in chunks if versions.get(session_of(c)) is None]
    return [c for c in chunks if versions.get(session_of(c)) is not None]


def check_budget(
    summary: RunSummary, series: SeriesRequest, chunks: Sequence[Chunk], max_cost_usd: float | None
) -> None:
    """Ask a charging vendor what fetching `chunks` costs, record it in the summary, and refuse the run before
    anything is downloaded when the quote is above `max_cost_usd`."""
    if not isinstance(series.provider, PricedSource) or not chunks:
        return
    groups = group_chunks(chunks, series.provider.max_symbols_per_request)
    summary.cost_usd = estimate_cost_task.with_options(retries=run_settings().retries)(
        series.provider_name, series.provider_options, groups
    )
    get_run_logger().info("%s quotes $%.2f for %d chunks", series.provider_name, summary.cost_usd, len(chunks))
    if max_cost_usd is not None and summary.cost_usd > max_cost_usd:
        raise BudgetExceededError(
            f"{series.provider_name} quotes ${summary.cost_usd:,.2f} for {len(chunks)} chunks, above "
            f"max_cost_usd ${max_cost_usd:,.2f}: nothing was downloaded. Raise --max-cost-usd or fetch less"
        )


def run_chunks(
    summary: RunSummary,
    chunks: Sequence[Chunk],
    *,
    provider: str,
    warehouse_url: str | None,
    provider_options: Mapping[str, Any] | None,
    on_invalid: OnInvalid,
    started: float,
) -> RunSummary:
    """Submit one `ingest_chunk` task per chunk, record failures in the ledger, publish artifacts, and raise
    IncompleteRunError (the flow run fails, alerts fire) when any chunk ended rejected or failed."""
    logger = get_run_logger()
    if not chunks:
        summary.elapsed_seconds = time.perf_counter() - started
        publish_summary(summary)
        return summary
    settings = run_settings()
    names = configured_limits(provider, warehouse_url)
    logger.info("Prefect limits in use: provider rate %s, warehouse %s", names.provider, names.warehouse)
    retry_options: dict[str, Any] = {
        "retries": settings.retries,
        "retry_delay_seconds": exponential_backoff(settings.retry_backoff_seconds)(settings.retries),
        "retry_jitter_factor": settings.retry_jitter_factor,
    }
    options = dict(provider_options or {})
    groups = group_chunks(chunks, get_provider(provider, options).max_symbols_per_request)
    progress.started(len(chunks))
    artifact = start_progress(len(chunks), summary.flow)
    futures: dict[PrefectFuture[Any], list[Chunk]] = {}
    for group in groups:
        if len(group) == 1:
            future: PrefectFuture[Any] = ingest_chunk.with_options(**retry_options).submit(
                group[0], warehouse_url, options, on_invalid, names
            )
        else:
            label = f"{provider}:{len(group)} symbols:{group[0].timeframe}:{group[0].window_start:%Y-%m-%d}"
            future = ingest_chunk_group.with_options(**retry_options).submit(
                group, label, warehouse_url, options, on_invalid, names
            )
        futures[future] = group
    run_id = current_flow_run_id()
    done = 0
    for future in as_completed(list(futures)):
        group = futures[future]
        try:
            outcome = future.result()
            results: list[ChunkResult] = outcome if isinstance(outcome, list) else [outcome]
        except Exception as exc:  # the task failed after its retries, or a terminal error
            error = f"{type(exc).__name__}: {exc}"
            results = []
            for chunk in group:
                record_chunk_failure(chunk, error, warehouse_url, run_id)
                results.append(ChunkResult(chunk=chunk, status=LedgerStatus.FAILED, error=error))
        for result in results:
            done += 1
            summary.results.append(result)
            progress.advanced(result)
            if not result.status.ok:
                logger.warning("chunk %s ended %s: %s", result.chunk.label(), result.status, result.error)
        advance_progress(artifact, done, len(chunks))
    summary.results.sort(key=lambda r: r.chunk)
    summary.elapsed_seconds = time.perf_counter() - started
    publish_summary(summary)
    logger.info("%s", summary.headline())
    if not summary.ok:
        raise IncompleteRunError(summary.failure_message(), summary)
    return summary
