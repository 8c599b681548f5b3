"""The chunk task: a thin Prefect wrapper over the batch engine (ingest.run_batch). It resolves the provider's key
and the warehouse, tells the engine which attempt this is, gates it with Prefect's limits, and turns its outcome
into the task's final state. Prefect retries what the engine raises, transient errors only."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from prefect import Task, task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import State, TaskRun
from prefect.context import TaskRunContext
from prefect.runtime import flow_run, task_run
from prefect.states import Completed, Failed

from candleflow.model import Chunk, OnInvalid
from ingest import Attempt, BatchOutcome, NoGates, Progress, is_transient, retry_after_seconds, run_batch
from providers import get_provider, provider_of
from providers.errors import TransientProviderError
from tasks.limits import LimitNames, PrefectGates
from tasks.secrets import with_secrets
from warehouse.engine import get_engine

__all__ = ["BatchOutcome", "OnInvalid", "ingest_chunks"]


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
    long (ingest.retry_after_seconds) before failing it."""
    context = TaskRunContext.get()
    if context is None or context.task_run.run_count > context.task.retries:
        return
    time.sleep(retry_after_seconds(error))


def _attempt() -> Attempt:
    """Which attempt of its task run this is: the last one when Prefect will not retry it."""
    context = TaskRunContext.get()
    if context is None:
        return Attempt(current_flow_run_id())
    return Attempt(current_flow_run_id(), last=context.task_run.run_count > context.task.retries)


# What the attempts of each task run have done so far, by task run id. Prefect retries a task run in the process
# that ran it, so its next attempt finds here the chunks that already ended: it redoes none of them (nor pays a
# vendor again for one found unchanged) and reports them as they ended. Not read back from the ledger: a chunk
# found unchanged writes no ledger row, and the ledger keeps no revised or removed counts nor the expectations a
# rejected chunk failed, which the run's summary reports. Held only between an attempt and its retry.
_progress: dict[str, Progress] = {}
_progress_lock = threading.Lock()


@contextmanager
def _attempts_progress() -> Iterator[Progress]:
    """This task run's progress, kept for its next attempt when this one raises and Prefect may retry it."""
    context = TaskRunContext.get()
    if context is None:
        yield Progress()
        return
    key = str(context.task_run.id)
    with _progress_lock:
        progress = _progress.pop(key, None) or Progress()
    try:
        yield progress
    except Exception as exc:
        if is_transient(exc) and context.task_run.run_count <= context.task.retries:  # Prefect will retry it
            with _progress_lock:
                _progress[key] = progress
        raise


def group_task_name(chunks: list[Chunk]) -> str:
    """`ingest AAPL 1m 2024-03` for one chunk; `ingest AAPL,MSFT 1d 2024-03-05` or `ingest 40 symbols 1d
    2020-2024` for a batch; `ingest 6 symbols 1m 2024-01..2024-03` when its windows differ."""
    first = chunks[0]
    if len(chunks) == 1:
        return first.task_name()
    symbols = list(dict.fromkeys(c.symbol for c in chunks))
    who = ",".join(symbols) if len(symbols) <= 3 else f"{len(symbols)} symbols"
    periods = sorted({(c.window_start, c.period()) for c in chunks})
    when = periods[0][1] if len(periods) == 1 else f"{periods[0][1]}..{periods[-1][1]}"
    return f"ingest {who} {first.timeframe} {when}"


def _task_run_name() -> str:
    return group_task_name(list(task_run.parameters["chunks"]))


@task(
    name="ingest_chunks",
    task_run_name=_task_run_name,
    retry_condition_fn=retry_only_transient,
    cache_policy=NO_CACHE,
    log_prints=False,
)
def ingest_chunks(
    chunks: list[Chunk],
    warehouse_url: str | None,
    provider_options: Mapping[str, Any] | None,
    on_invalid: OnInvalid,
    limits: LimitNames | None = None,
) -> BatchOutcome | State[BatchOutcome]:
    """Fetch a batch of chunks from their provider (one request per window, or per group of symbols for
    providers that serve many), validate them all in one suite call, then load or quarantine each chunk in its
    own transaction with its ledger row. A retry (transient errors only) redoes only the chunks that had not
    ended (`_attempts_progress`)."""
    name = provider_of(chunks[0].provider)  # `csv:quandl` is the csv provider, its bars stored apart
    provider = get_provider(name, with_secrets(name, provider_options))
    gates = PrefectGates(limits) if limits is not None else NoGates()
    engine = get_engine(warehouse_url)
    with _attempts_progress() as progress:
        outcome = run_batch(chunks, provider, engine, on_invalid, attempt=_attempt(), gates=gates, progress=progress)
    return batch_end(outcome)


def batch_end(outcome: BatchOutcome) -> BatchOutcome | State[BatchOutcome]:
    """The batch task's final state says what became of its chunks, so the UI never shows green for a batch that
    loaded nothing: Failed (named Rejected when validation kept them all out) when no chunk loaded, Completed with
    a message when some did not. The outcome is the state's result either way: the flow counts every chunk."""
    missed = Counter(str(r.status) for r in outcome.results if not r.status.ok)
    if not missed:
        return outcome
    count = sum(missed.values())
    message = f"{count} of {len(outcome.results)} chunks did not load: " + ", ".join(
        f"{n} {status}" for status, n in sorted(missed.items())
    )
    if count < len(outcome.results):
        return Completed(data=outcome, message=message)
    return Failed(data=outcome, message=message, name="Rejected" if set(missed) == {"rejected"} else "Failed")
