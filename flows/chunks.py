"""Run planned chunks as Prefect tasks and gather what they did. Called from inside a flow."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from prefect.futures import as_completed
from prefect.logging import get_run_logger
from prefect.tasks import exponential_backoff

from candleflow.errors import IncompleteRunError
from candleflow.inputs import parse_symbols
from candleflow.model import Chunk, ChunkResult, LedgerStatus
from candleflow.report import RunSummary
from candleflow.sessions import DEFAULT_CALENDAR
from candleflow.settings import run_settings
from candleflow.timeframes import Timeframe, get_timeframe
from flows import progress
from providers import check_provider_name, get_provider
from tasks.ingest import OnInvalid, current_flow_run_id, ingest_chunk
from tasks.limits import configured_limits
from tasks.reporting import advance_progress, publish_summary, start_progress
from tasks.warehouse import record_chunk_failure


@dataclass(frozen=True)
class SeriesRequest:
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
    get_provider(provider, provider_options)  # the provider's own options model rejects bad options
    return SeriesRequest(tf, checked, (provider_options or {}).get("calendar", DEFAULT_CALENDAR))


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
    task = ingest_chunk.with_options(
        retries=settings.retries,
        retry_delay_seconds=exponential_backoff(settings.retry_backoff_seconds)(settings.retries),
        retry_jitter_factor=settings.retry_jitter_factor,
    )
    progress.started(len(chunks))
    artifact = start_progress(len(chunks), summary.flow)
    futures = {
        task.submit(chunk, warehouse_url, dict(provider_options or {}), on_invalid, names): chunk for chunk in chunks
    }
    run_id = current_flow_run_id()
    for done, future in enumerate(as_completed(list(futures)), start=1):
        chunk = futures[future]
        try:
            result: ChunkResult = future.result()
        except Exception as exc:  # the task failed after its retries, or a terminal error
            error = f"{type(exc).__name__}: {exc}"
            record_chunk_failure(chunk, error, warehouse_url, run_id)
            result = ChunkResult(chunk=chunk, status=LedgerStatus.FAILED, error=error)
        summary.results.append(result)
        progress.advanced(result)
        advance_progress(artifact, done, len(chunks))
        if not result.status.ok:
            logger.warning("chunk %s ended %s: %s", chunk.label(), result.status, result.error)
    summary.results.sort(key=lambda r: r.chunk)
    summary.elapsed_seconds = time.perf_counter() - started
    publish_summary(summary)
    logger.info("%s", summary.headline())
    if not summary.ok:
        raise IncompleteRunError(summary.failure_message(), summary)
    return summary
