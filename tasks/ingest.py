"""The chunk task: fetch, validate, load (or quarantine). Returns a small ChunkResult, never the bars."""

from __future__ import annotations

import time
from collections.abc import Mapping
from contextlib import nullcontext
from typing import Any, Literal

import sqlalchemy as sa
from prefect import Task, task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import TaskRun
from prefect.concurrency.sync import concurrency, rate_limit
from prefect.runtime import flow_run
from prefect.states import State

from candleflow.checksum import frame_checksum
from candleflow.model import Chunk, ChunkResult
from candleflow.timeframes import get_timeframe
from expectations import validate_bars
from providers import get_provider
from providers.base import FetchRequest
from providers.errors import TransientProviderError
from tasks.limits import LimitNames
from tasks.secrets import with_secrets
from warehouse.engine import get_engine
from warehouse.loader import load_chunk, reject_chunk

OnInvalid = Literal["reject", "quarantine_rows"]


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


@task(
    name="ingest_chunk",
    task_run_name="ingest {chunk.provider}:{chunk.symbol}:{chunk.timeframe}:{chunk.window_start:%Y-%m-%d}",
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
    started = time.perf_counter()
    provider = get_provider(chunk.provider, with_secrets(chunk.provider, provider_options))
    request = FetchRequest((chunk.symbol,), get_timeframe(chunk.timeframe), chunk.window_start, chunk.window_end)
    if limits is not None and limits.provider:
        rate_limit(limits.provider)
    frame = provider.fetch(request)
    verdict = validate_bars([(chunk, frame)]).verdicts[0]
    engine = get_engine(warehouse_url)
    run_id = current_flow_run_id()
    checksum = frame_checksum(frame) if verdict.ok else None
    with concurrency(limits.warehouse, occupy=1) if limits and limits.warehouse else nullcontext():
        if verdict.ok:
            assert checksum is not None
            outcome = load_chunk(engine, chunk, frame, checksum=checksum, flow_run_id=run_id)
        else:
            outcome = reject_chunk(
                engine,
                chunk,
                frame,
                verdict.bad_rows,
                verdict.failed_rules,
                flow_run_id=run_id,
                load_good_rows=on_invalid == "quarantine_rows",
            )
    error = None
    if not verdict.ok:
        rules = "; ".join(verdict.failed_rules)
        if on_invalid == "quarantine_rows":
            error = f"{len(verdict.bad_rows)} bad row(s) quarantined, {outcome.rows} loaded: {rules}"
        else:
            error = f"{len(verdict.bad_rows)} bad row(s); all {len(frame)} quarantined, none loaded: {rules}"
    return ChunkResult(
        chunk=chunk,
        status=outcome.status,
        rows=len(frame),
        written=outcome.written,
        unchanged=outcome.unchanged,
        error=error,
        failed_expectations=list(verdict.failed_rules),
        seconds=time.perf_counter() - started,
    )
