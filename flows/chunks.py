"""Run planned chunks as Prefect tasks and gather what they did. Called from inside a flow."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from prefect.futures import PrefectFuture, as_completed
from prefect.logging import get_run_logger
from prefect.tasks import exponential_backoff

from candleflow.coverage import SessionCoverage
from candleflow.errors import IncompleteRunError
from candleflow.model import Chunk, ChunkResult, LedgerStatus
from candleflow.planning import batch_chunks
from candleflow.report import RunSummary
from candleflow.settings import RunSettings, run_settings
from flows import progress
from flows.fanout import in_partition, run_partitions, session_hours, wants_fan_out
from flows.inputs import RunInputs
from flows.plan import Asks, coverage_of
from ingest import BatchOutcome
from providers.base import Capabilities
from tasks.coverage import measure_coverage
from tasks.ingest import current_flow_run_id, ingest_chunks
from tasks.limits import configured_limits
from tasks.reporting import advance_progress, publish_coverage, publish_summary, publish_universe, start_progress
from tasks.sources import estimate_cost_task, source_versions_task
from tasks.warehouse import checkpoint_warehouse, prepare_warehouse, read_ledger_task, record_chunk_failure
from tasks.watch import record_run_end
from warehouse.errors import WarehouseUnusableError, describe, explain


def _versions_task(
    provider: str, options: Mapping[str, Any] | None, timeframe: str, dates: list[dt.date]
) -> dict[dt.date, str | None]:
    return source_versions_task.with_options(retries=run_settings().retries)(provider, options, timeframe, dates)


def _quote_task(provider: str, options: Mapping[str, Any] | None, groups: list[list[Chunk]]) -> float:
    return estimate_cost_task.with_options(retries=run_settings().retries)(provider, options, groups)


# How a flow's plan asks the warehouse and the vendor: Prefect tasks (retried, and shown in the run's graph).
TASK_ASKS = Asks(ledger=read_ledger_task, versions=_versions_task, quote=_quote_task, coverage=measure_coverage)


def transient_retries() -> dict[str, Any]:
    """Task options for retrying transient errors (the tasks' retry_condition_fn decides which are)."""
    settings = run_settings()
    return {
        "retries": settings.retries,
        "retry_delay_seconds": exponential_backoff(settings.retry_backoff_seconds)(settings.retries),
        "retry_jitter_factor": settings.retry_jitter_factor,
    }


def prepare(warehouse_url: str | None, *, every_symbol: bool = False) -> None:
    """Create missing tables (and the window index of a run of every ticker), retrying a dropped or busy
    connection like a chunk would."""
    prepare_warehouse.with_options(**transient_retries())(warehouse_url, every_symbol)


def run_chunks(summary: RunSummary, chunks: Sequence[Chunk], inputs: RunInputs, *, started: float) -> RunSummary:
    """Submit the chunks as `ingest_chunks` tasks, a batch of about CANDLEFLOW_BATCH_ROWS bars each (chunks of
    one request stay together), record what failed in the ledger, and publish the progress and summary
    artifacts. The caller ends the run with `finish`."""
    logger = get_run_logger()
    if not chunks:
        summary.elapsed_seconds = time.perf_counter() - started
        publish_summary(summary)
        return summary
    settings = run_settings()
    warehouse_url, options = inputs.warehouse_url, dict(inputs.provider_options)
    names = configured_limits(inputs.provider, warehouse_url)
    logger.info("Prefect limits in use: provider rate %s, warehouse %s", names.provider, names.warehouse)
    retry_options = transient_retries()
    source = inputs.source
    batches = batch_chunks(
        chunks,
        source.symbols_per_request,
        rows=settings.batch_rows,
        max_chunks=settings.batch_chunks,
        workers=spread_over(settings, source.capabilities),
        session_hours=session_hours(inputs),
    )
    logger.info("%d chunks in %d tasks", len(chunks), len(batches))
    progress.started(len(chunks))
    artifact = start_progress(len(chunks), summary.flow)
    task = ingest_chunks.with_options(**retry_options)
    # Submitted as workers free up, never all at once: the flow holds at most a few batches' futures.
    pending = iter(batches)
    futures: dict[PrefectFuture[Any], list[Chunk]] = {}

    stopped: str | None = None  # the warehouse refuses every write alike: submit nothing more

    def submit_next() -> None:
        batch = next(pending, None) if stopped is None else None
        if batch is not None:
            futures[task.submit(batch, warehouse_url, options, inputs.on_invalid, names)] = batch

    for _ in range(settings.task_workers * 2):
        submit_next()
    run_id = current_flow_run_id()
    done = 0
    said_stop = False
    while futures:
        future = next(as_completed(list(futures)))
        batch = futures.pop(future)
        try:
            outcome = batch_outcome(future)
            results = outcome.results
            summary.stages.add(outcome.stages)
            stopped = stopped or outcome.stopped
        except Exception as exc:  # the task failed after its retries, or broke: its unsettled chunks failed
            error = describe(exc)
            if isinstance(explain(exc), WarehouseUnusableError):
                stopped = stopped or error
            results = [ChunkResult(chunk=chunk, status=LedgerStatus.FAILED, error=error) for chunk in batch]
            if stopped is None:
                results = [_recorded(result, warehouse_url, run_id) for result in results]
        if stopped is not None and not said_stop:
            logger.error("%s; the run stops: chunks not loaded yet end failed with this reason", stopped)
            said_stop = True
        submit_next()
        done += len(batch)
        if stopped is not None and not futures:  # what was never submitted fails with the warehouse's one line
            never = [c for b in pending for c in b]
            results += [ChunkResult(chunk=c, status=LedgerStatus.FAILED, error=stopped) for c in never]
            done += len(never)
        for result in results:  # a chunk split after failing validation has a result per sub-chunk
            summary.results.append(result)
            progress.advanced(result)
            if not result.status.ok and result.error != stopped:
                logger.warning("chunk %s ended %s: %s", result.chunk.label(), result.status, result.error)
        advance_progress(artifact, done, len(chunks), summary.flow)
    summary.results.sort(key=lambda r: r.chunk)
    checkpoint_warehouse(warehouse_url)
    summary.elapsed_seconds = time.perf_counter() - started
    publish_summary(summary)
    logger.info("%s", summary.headline())
    logger.info("%s", summary.time_line())
    return summary


def spread_over(settings: RunSettings, capabilities: Capabilities) -> int:
    """How many batches a small run is cut into at least: one per task worker when they can overlap (a remote
    provider's waits, or tasks in processes of their own: a pool's or a Dask cluster's); one when the fetch is
    local work and the tasks share the flow's GIL in threads, where more batches only add fixed costs (README,
    "Scale")."""
    if capabilities.remote or settings.task_runner != "threads":
        return settings.task_workers
    return 1


def _recorded(result: ChunkResult, warehouse_url: str | None, run_id: str | None) -> ChunkResult:
    """A failed chunk's ledger row; when the warehouse cannot take it either, the summary still says why."""
    try:
        record_chunk_failure(result.chunk, result.error or "", warehouse_url, run_id)
    except Exception as exc:
        return replace(result, error=f"{result.error} (not recorded in the ledger: {describe(exc)})")
    return result


def batch_outcome(future: PrefectFuture[Any]) -> BatchOutcome:
    """What a batch task did, also when it ended Failed because none of its chunks loaded (its outcome is that
    state's result); raises what a task that broke raised."""
    outcome = future.result(raise_on_failure=False)
    if isinstance(outcome, BaseException):
        raise outcome
    if not isinstance(outcome, BatchOutcome):
        raise TypeError(f"the batch task returned {type(outcome).__name__}, not its outcome")
    return outcome


def report_coverage(summary: RunSummary, inputs: RunInputs, start: dt.date, end: dt.date) -> None:
    """Publish the coverage grid of the run's series over the session dates start..end."""
    grid: dict[str, list[SessionCoverage]] = {}
    for timeframe in inputs.timeframes:
        coverage = coverage_of(inputs, timeframe.name, start, end, TASK_ASKS)
        grid |= {f"{symbol} {timeframe.name}": sessions for symbol, sessions in coverage.items()}
    publish_coverage(summary.flow, f"{inputs.stored_as} coverage {start}..{end}", grid)


def carry_out(
    summary: RunSummary, inputs: RunInputs, first: dt.date, last: dt.date, *, started: float, prepared: bool = False
) -> RunSummary:
    """What every flow does once its chunks are planned: log a paid vendor's quote; return a dry run's plan;
    make the warehouse's tables ready (unless the flow did: `prepared`) when there is something to load; run the
    chunks, here or, in a deployed run larger than a partition, as partitions on the work pool (flows/fanout.py);
    publish the coverage grid of first..last; end the run (`finish`)."""
    if summary.cost_usd is not None:
        get_run_logger().info("%s quotes $%.2f for %d chunks", inputs.provider, summary.cost_usd, len(summary.todo))
    if inputs.universe.referenced:
        publish_universe(summary.flow, inputs.universe)
    if getattr(inputs, "dry_run", False):
        summary.elapsed_seconds = time.perf_counter() - started
        return summary
    if summary.todo and not prepared:
        prepare(inputs.warehouse_url, every_symbol=inputs.universe.every)
    if wants_fan_out(summary, inputs) and run_partitions(summary, inputs, last, TASK_ASKS.ledger):
        summary.elapsed_seconds = time.perf_counter() - started
        publish_summary(summary)
        get_run_logger().info("%s", summary.headline())
    else:
        run_chunks(summary, summary.todo, inputs, started=started)
    report_coverage(summary, inputs, first, last)
    if not in_partition():  # a partition's parent records the run as a whole
        record_run_end(summary, inputs.warehouse_url)
    return finish(summary)


def finish(summary: RunSummary) -> RunSummary:
    """Return the summary of a run whose chunks all ended loaded or empty; otherwise raise IncompleteRunError,
    whose message (the Failed state's, which notices carry) gives the counts and the chunks that failed and why."""
    if summary.ok:
        return summary
    raise IncompleteRunError(summary.failure_message(), summary)
