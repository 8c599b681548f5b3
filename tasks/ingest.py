"""The chunk task: fetch, validate, load (or quarantine). Returns a small ChunkResult, never the bars."""

from __future__ import annotations

import time
from collections.abc import Mapping
from contextlib import nullcontext
from typing import Any

import pandas as pd
import sqlalchemy as sa
from prefect import Task, task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import TaskRun
from prefect.concurrency.sync import concurrency, rate_limit
from prefect.context import TaskRunContext
from prefect.runtime import flow_run, task_run
from prefect.states import State

from candleflow.checksum import frame_checksum
from candleflow.model import Chunk, ChunkResult, LedgerStatus, OnInvalid
from candleflow.sessions import final_through
from candleflow.settings import run_settings
from candleflow.timeframes import get_timeframe
from expectations import validate_bars
from providers import get_provider, provider_of
from providers.base import SOURCE_VERSION, UNKNOWN_SYMBOLS, ClockedSource, FetchRequest
from providers.errors import TransientProviderError
from tasks.limits import LimitNames
from tasks.secrets import with_secrets
from warehouse.engine import get_engine
from warehouse.loader import load_chunk, record_failure, reject_chunk

__all__ = ["OnInvalid", "ingest_chunk", "ingest_chunk_group"]


def is_transient(error: BaseException) -> bool:
    """A retry can help: the provider said so, or the warehouse connection dropped or was busy
    (OperationalError: lost connection, timeout, SQLite "database is locked"). Never for validation failures,
    terminal provider errors, constraint violations or our own bugs."""
    if isinstance(error, TransientProviderError):
        return True
    return isinstance(error, sa.exc.OperationalError | sa.exc.InterfaceError) and not isinstance(
        error, sa.exc.IntegrityError
    )


def retry_only_transient(_task: Task[..., Any], _task_run: TaskRun, state: State[Any]) -> bool:
    try:
        state.result()
    except Exception as error:
        return is_transient(error)
    return False


def current_flow_run_id() -> str | None:
    run_id = flow_run.get_id()
    return str(run_id) if run_id else None


def honour_retry_after(error: TransientProviderError) -> None:
    """When the vendor said how long to wait (Retry-After) and Prefect will retry this task, hold the task that
    long (capped by CANDLEFLOW_MAX_RETRY_AFTER_SECONDS) before failing it; Prefect's own backoff adds to it.
    Prefect's retry delays are fixed per task, so this is where a per-response delay can be honoured."""
    context = TaskRunContext.get()
    if not error.retry_after or context is None or context.task_run.run_count > context.task.retries:
        return
    time.sleep(min(error.retry_after, run_settings().max_retry_after_seconds))


def request_for(chunks: list[Chunk]) -> FetchRequest:
    """One provider request for chunks that share a window."""
    first = chunks[0]
    symbols = tuple(c.symbol for c in chunks)
    return FetchRequest(symbols, get_timeframe(first.timeframe), first.window_start, first.window_end)


def _ingest(
    chunks: list[Chunk],
    warehouse_url: str | None,
    provider_options: Mapping[str, Any] | None,
    on_invalid: OnInvalid,
    limits: LimitNames | None,
) -> list[ChunkResult]:
    """Fetch chunks that share one window in one request, validate them in one suite call, then load or
    quarantine each chunk in its own transaction."""
    started = time.perf_counter()
    first = chunks[0]
    name = provider_of(first.provider)  # `csv:quandl` is the csv provider, its bars stored apart
    provider = get_provider(name, with_secrets(name, provider_options))
    request = request_for(chunks)
    # Read the clock before fetching: a session that closes during the fetch is not yet final in what it returns.
    as_of = provider.now() if isinstance(provider, ClockedSource) else pd.Timestamp.now(tz="UTC")
    calendar = first.calendar  # chunks sharing a request share their calendar (flows.chunks groups them so)
    if limits is not None and limits.provider:
        rate_limit(limits.provider)
    try:
        fetched = provider.fetch(request)
    except TransientProviderError as exc:
        honour_retry_after(exc)
        raise
    described: dict[str, Any] = {
        "adjustment": str(provider.adjustment),
        "source_version": fetched.attrs.get(SOURCE_VERSION),
    }
    if len(chunks) == 1:
        parts = [(first, fetched)]
    else:
        by_symbol = dict(tuple(fetched.groupby("symbol", sort=False)))
        parts = [(c, by_symbol.get(c.symbol, fetched.iloc[0:0]).reset_index(drop=True)) for c in chunks]
    engine = get_engine(warehouse_url)
    run_id = current_flow_run_id()
    results = []
    unknown = set(fetched.attrs.get(UNKNOWN_SYMBOLS, ()))
    for chunk, _ in [p for p in parts if p[0].symbol in unknown]:  # the vendor answered for the others only
        unknown_error = f"TerminalProviderError: {chunk.provider}: unknown symbol {chunk.symbol}: check the symbol"
        record_failure(engine, chunk, unknown_error, flow_run_id=run_id)
        results.append(ChunkResult(chunk=chunk, status=LedgerStatus.FAILED, error=unknown_error))
    parts = [p for p in parts if p[0].symbol not in unknown]
    verdicts = validate_bars(parts, calendar=calendar, hours=provider.session_hours).verdicts
    for (chunk, frame), verdict in zip(parts, verdicts, strict=True):
        described["complete_through"] = final_through(
            chunk.window_start, chunk.window_end, request.timeframe.intraday, as_of, calendar
        )
        checksum = frame_checksum(frame)  # of what the provider sent, bad rows included: reruns compare it
        with concurrency(limits.warehouse, occupy=1) if limits and limits.warehouse else nullcontext():
            if verdict.ok:
                outcome = load_chunk(engine, chunk, frame, checksum=checksum, flow_run_id=run_id, **described)
            else:
                outcome = reject_chunk(
                    engine,
                    chunk,
                    frame,
                    verdict.bad_rows,
                    verdict.failed_rules,
                    flow_run_id=run_id,
                    load_good_rows=on_invalid == "quarantine_rows",
                    checksum=checksum,
                    **described,
                )
        error: str | None = None
        if not verdict.ok:
            rules = "; ".join(verdict.failed_rules)
            if on_invalid == "quarantine_rows":
                good = len(frame) - len(verdict.bad_rows)
                error = f"{len(verdict.bad_rows)} bad row(s) quarantined, the other {good} loaded: {rules}"
            else:
                error = f"{len(verdict.bad_rows)} bad row(s); all {len(frame)} quarantined, none loaded: {rules}"
        results.append(
            ChunkResult(
                chunk=chunk,
                status=outcome.status,
                rows=len(frame),
                written=outcome.written,
                unchanged=outcome.unchanged,
                revised=outcome.revised,
                error=error,
                failed_expectations=list(verdict.failed_rules),
            )
        )
    for result in results:
        result.seconds = (time.perf_counter() - started) / len(results)
    return results


def group_task_name(chunks: list[Chunk]) -> str:
    """`ingest AAPL 1m 2024-03` for one chunk; `ingest AAPL,MSFT 1d 2024-03-05` or `ingest 40 symbols 1d
    2024-03-05` for chunks of many symbols sharing a window."""
    first = chunks[0]
    if len(chunks) == 1:
        return first.task_name()
    who = ",".join(c.symbol for c in chunks) if len(chunks) <= 3 else f"{len(chunks)} symbols"
    return f"ingest {who} {first.timeframe} {first.period()}"


def _task_run_name() -> str:
    parameters = task_run.parameters
    chunks = parameters.get("chunks") or [parameters["chunk"]]
    return group_task_name(list(chunks))


@task(
    name="ingest_chunk",
    task_run_name=_task_run_name,
    retry_condition_fn=retry_only_transient,
    cache_policy=NO_CACHE,
    log_prints=False,
)
def ingest_chunk(
    chunk: Chunk,
    warehouse_url: str | None,
    provider_options: Mapping[str, Any] | None,
    on_invalid: OnInvalid,
    limits: LimitNames | None = None,
) -> ChunkResult:
    """Fetch one chunk from its provider, validate it with the OHLCV suite, then load it or quarantine it."""
    return _ingest([chunk], warehouse_url, provider_options, on_invalid, limits)[0]


@task(
    name="ingest_chunk_group",
    task_run_name=_task_run_name,
    retry_condition_fn=retry_only_transient,
    cache_policy=NO_CACHE,
    log_prints=False,
)
def ingest_chunk_group(
    chunks: list[Chunk],
    warehouse_url: str | None,
    provider_options: Mapping[str, Any] | None,
    on_invalid: OnInvalid,
    limits: LimitNames | None = None,
) -> list[ChunkResult]:
    """Chunks of many symbols sharing one window (one flat file, one multi-symbol request): one fetch and one
    validation call for all of them; each symbol's bars and ledger row still commit on their own."""
    return _ingest(chunks, warehouse_url, provider_options, on_invalid, limits)
