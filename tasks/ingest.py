"""The chunk task: fetch, validate, load (or quarantine). Returns a small ChunkResult, never the bars."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Mapping
from contextlib import nullcontext
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import pandas as pd
import sqlalchemy as sa
from prefect import Task, task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import TaskRun
from prefect.concurrency.sync import concurrency, rate_limit
from prefect.context import TaskRunContext
from prefect.runtime import flow_run, task_run
from prefect.states import Completed, Failed, State

from candleflow.checksum import frame_checksum
from candleflow.model import Chunk, ChunkResult, LedgerStatus, OnInvalid
from candleflow.planning import group_chunks, split_failed
from candleflow.report import StageTimes
from candleflow.sessions import final_through
from candleflow.settings import run_settings
from candleflow.timeframes import get_timeframe
from expectations import validate_bars
from expectations.explain import WaysOut, explain_verdict
from expectations.validate import ChunkVerdict
from providers import get_provider, provider_of
from providers.base import request_for
from providers.errors import TransientProviderError
from tasks.limits import LimitNames
from tasks.secrets import with_secrets
from warehouse.engine import get_engine
from warehouse.errors import WarehouseConnectionError, WarehouseUnusableError, describe, explain
from warehouse.loader import (
    ChunkLoad,
    LoadOutcome,
    load_chunk,
    load_fresh_chunks,
    record_failure,
    reject_chunk,
    settle_unchanged,
)

__all__ = ["BatchOutcome", "OnInvalid", "ingest_chunks"]


def is_transient(error: BaseException) -> bool:
    """A retry can help: the provider said so, or the warehouse connection dropped or timed out
    (warehouse.errors.WarehouseConnectionError). Never for validation failures, terminal provider errors,
    constraint violations, a warehouse that refuses every write alike (disk full, a SQLite file locked beyond the
    busy timeout, which already was the wait) or our own bugs."""
    if isinstance(error, TransientProviderError):
        return True
    return isinstance(explain(error), WarehouseConnectionError)


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


@dataclass
class BatchOutcome:
    """What one task did: a result per chunk, in the order given, and where its time went."""

    results: list[ChunkResult]
    stages: StageTimes
    stopped: str | None = None  # the warehouse refuses every write alike (disk full, locked): the run stops


@dataclass
class _Fetched:
    chunk: Chunk
    frame: pd.DataFrame
    described: dict[str, Any]

    @cached_property
    def checksum(self) -> str:
        """Of what the provider sent, bad rows included: reruns compare it. Once per chunk, whichever path loads it."""
        return frame_checksum(self.frame)


# Results of a task's earlier attempts, by task run id: a retry redoes only the chunks that did not end. With
# them, the sub-chunks of each chunk split after failing validation.
_earlier: dict[str, tuple[dict[Chunk, ChunkResult], StageTimes, dict[Chunk, list[Chunk]]]] = {}
_earlier_lock = threading.Lock()


def _attempt() -> tuple[str | None, bool]:
    """This task run's id and whether this attempt is its last (Prefect will not retry it)."""
    context = TaskRunContext.get()
    if context is None:
        return None, True
    return str(context.task_run.id), context.task_run.run_count > context.task.retries


class _Batch:
    """One task's chunks on their way: fetched by request, validated in one suite call per calendar, loaded one
    chunk per transaction. A chunk that ends (loaded, empty, rejected, or failed for good) is recorded at once,
    so a transient error elsewhere in the batch never costs it its outcome."""

    def __init__(
        self,
        chunks: list[Chunk],
        warehouse_url: str | None,
        provider_options: Mapping[str, Any] | None,
        on_invalid: OnInvalid,
        limits: LimitNames | None,
    ) -> None:
        self.chunks = chunks
        self.on_invalid = on_invalid
        self.limits = limits
        name = provider_of(chunks[0].provider)  # `csv:quandl` is the csv provider, its bars stored apart
        self.provider = get_provider(name, with_secrets(name, provider_options))
        # a provider with an `hours` option (csv): named as a way out of a rejection
        self.hours_option = "hours" in type(self.provider.settings).model_fields
        self.engine = get_engine(warehouse_url)
        self.run_id = current_flow_run_id()
        self.task_run_id, self.last_attempt = _attempt()
        with _earlier_lock:
            earlier = _earlier.pop(self.task_run_id or "", None)
        # what earlier attempts of this task run finished, and the time they took
        self.done: dict[Chunk, ChunkResult] = earlier[0] if earlier else {}
        self.stages = earlier[1] if earlier else StageTimes()
        self.parts: dict[Chunk, list[Chunk]] = earlier[2] if earlier else {}  # chunks split into sub-chunks
        self.retry_error: BaseException | None = None  # a transient error to raise so Prefect retries the rest
        self.stopped: str | None = None  # why the warehouse cannot take any chunk now (WarehouseUnusableError)
        # how far each window's bars were final when fetched, by (window, timeframe, calendar)
        self.final_through: dict[tuple[pd.Timestamp, pd.Timestamp, str, str], pd.Timestamp] = {}

    def run(self) -> BatchOutcome:
        started = time.monotonic()
        todo = [c for c in self.chunks if not self._ended(c)]
        fetched = self._fetch(todo)
        verdicts = self._validate(fetched)
        if self.on_invalid == "reject":
            fetched, verdicts = self._split_rejected(fetched, verdicts)
        self._load(fetched, verdicts)
        self.stages.spans.append((started, time.monotonic()))
        if self.retry_error is not None and not self.last_attempt and self.stopped is None:
            with _earlier_lock:
                _earlier[self.task_run_id or ""] = (self.done, self.stages, self.parts)
            raise self.retry_error
        return BatchOutcome([result for c in self.chunks for result in self._results_of(c)], self.stages, self.stopped)

    def _ended(self, chunk: Chunk) -> bool:
        parts = self.parts.get(chunk)
        return chunk in self.done or (parts is not None and all(p in self.done for p in parts))

    def _results_of(self, chunk: Chunk) -> list[ChunkResult]:
        """A chunk's result, or its sub-chunks' results when it was split."""
        parts = [self.done[p] for p in self.parts.get(chunk, []) if p in self.done]
        return parts + ([self.done[chunk]] if chunk in self.done else [])

    def _split_rejected(
        self, fetched: list[_Fetched], verdicts: Mapping[Chunk, ChunkVerdict]
    ) -> tuple[list[_Fetched], dict[Chunk, ChunkVerdict]]:
        """Chunks that failed validation and span several calendar years (daily) or months (intraday) become one
        chunk each (`split_failed`): only those holding bad rows are rejected, the others load."""
        out: list[_Fetched] = []
        judged = dict(verdicts)
        for item in fetched:
            verdict = verdicts[item.chunk]
            split = None
            if not verdict.ok:
                split = split_failed(item.chunk, item.frame["ts"], verdict.bad_rows, verdict.failed_rules)
            if split is None:
                out.append(item)
                continue
            self.parts[item.chunk] = [part.chunk for part in split]
            frame = item.frame.reset_index(drop=True)
            for part in (p for p in split if p.chunk not in self.done):  # not ended by an earlier attempt
                out.append(_Fetched(part.chunk, frame.iloc[part.rows].reset_index(drop=True), item.described))
                judged[part.chunk] = ChunkVerdict(part.chunk, part.failed_rules, part.bad_rows)
        return out, judged

    def _end(self, result: ChunkResult) -> None:
        self.done[result.chunk] = result

    def _fail(self, chunks: list[Chunk], error: BaseException | str) -> None:
        """Chunks that cannot be retried (or are out of retries): `failed` in the ledger, with the reason."""
        reason = error if isinstance(error, str) else describe(error)
        for chunk in chunks:
            try:
                record_failure(self.engine, chunk, reason, flow_run_id=self.run_id)
            except Exception as exc:  # the warehouse itself is gone: the run's summary still says why
                reason = f"{reason} (not recorded in the ledger: {type(exc).__name__})"
            self._end(ChunkResult(chunk=chunk, status=LedgerStatus.FAILED, error=reason))

    def _take_request_slots(self, requests: int) -> None:
        """Take `requests` slots of the provider's rate limit, as many at a time as the limit allows: one call to
        the Prefect server per burst instead of one per request."""
        if self.limits is None or not self.limits.provider or requests <= 0:
            return
        rate_limit(self.limits.provider, occupy=requests)

    def _fetch(self, todo: list[Chunk]) -> list[_Fetched]:
        began = time.monotonic()
        # Read the clock before fetching: a session that closes during the fetch is not yet final in what it returns.
        provider = self.provider
        self.as_of = provider.now()
        out: list[_Fetched] = []
        requests = group_chunks(todo, provider.capabilities.max_symbols_per_request)
        burst = self.limits.provider_burst if self.limits is not None else 1
        for i, group in enumerate(requests):
            if i % burst == 0:
                self._take_request_slots(min(burst, len(requests) - i))
            try:
                result = provider.fetch(request_for(group))
            except TransientProviderError as exc:
                honour_retry_after(exc)
                if self.last_attempt:
                    self._fail(group, exc)
                else:  # the retry fetches it again; the rest go on now, so each chunk keeps its own retries
                    self.retry_error = self.retry_error or exc
                continue
            except Exception as exc:  # terminal: an unknown symbol, a refused key, a bug in the adapter
                self._fail(group, exc)
                continue
            frame = result.bars
            described = {"adjustment": str(provider.adjustment), "source_version": result.source_version}
            unknown = set(result.unknown_symbols)
            for chunk in [c for c in group if c.symbol in unknown]:  # the vendor answered for the others only
                self._fail([chunk], f"TerminalProviderError: {chunk.provider}: unknown symbol {chunk.symbol}: check it")
            known = [c for c in group if c.symbol not in unknown]
            if len(group) == 1:
                out += [_Fetched(c, frame, described) for c in known]
            else:
                by_symbol = dict(tuple(frame.groupby("symbol", sort=False)))
                empty = frame.iloc[0:0]
                out += [_Fetched(c, by_symbol.get(c.symbol, empty).reset_index(drop=True), described) for c in known]
        self.stages.fetch += time.monotonic() - began
        return out

    def _validate(self, fetched: list[_Fetched]) -> dict[Chunk, ChunkVerdict]:
        """One suite call per exchange calendar in the batch (almost always one): the fixed cost of a call is paid
        per batch, not per chunk."""
        began = time.monotonic()
        verdicts: dict[Chunk, ChunkVerdict] = {}
        by_calendar: dict[str, list[_Fetched]] = {}
        for item in fetched:
            by_calendar.setdefault(item.chunk.calendar, []).append(item)
        for calendar, items in by_calendar.items():
            parts = [(item.chunk, item.frame) for item in items]
            report = validate_bars(parts, calendar=calendar, hours=self.provider.capabilities.session_hours)
            verdicts |= {v.chunk: v for v in report.verdicts}
        self.stages.validate += time.monotonic() - began
        return verdicts

    def _load(self, fetched: list[_Fetched], verdicts: Mapping[Chunk, ChunkVerdict]) -> None:
        """Each chunk's bars (or its quarantined rows) and its ledger row in one transaction, holding one slot of
        the warehouse's concurrency limit for the whole batch."""
        if not fetched:
            return
        began = time.monotonic()
        limit = self.limits.warehouse if self.limits is not None else None
        with concurrency(limit, occupy=1) if limit else nullcontext():
            pending = list(fetched)
            while pending:
                pending = self._load_on_one_connection(pending, verdicts)
        self.stages.load += time.monotonic() - began

    def _load_on_one_connection(
        self, fetched: list[_Fetched], verdicts: Mapping[Chunk, ChunkVerdict]
    ) -> list[_Fetched]:
        """Load chunks on one connection: first those the ledger already holds exactly (checked together: nothing
        to write), then those whose windows hold no bar yet together where the warehouse can (one COPY, one
        commit), every other one in its own transaction. Returns the chunks still to load on a new
        connection when it broke on the last attempt (before it, the task retries them)."""
        with self.engine.connect() as conn:
            try:
                loads = [self._chunk_load(item) for item in fetched if verdicts[item.chunk].ok]
                together = _results(loads, settle_unchanged(conn, loads))
                rest = [load for load in loads if load.chunk not in together]
                together |= _results(rest, load_fresh_chunks(conn, rest, flow_run_id=self.run_id))
            except Exception as exc:
                if self._stop(exc):
                    return []
                if not is_transient(exc) or self.last_attempt:
                    raise
                self.retry_error = self.retry_error or exc
                return []
            for i, item in enumerate(fetched):
                if item.chunk in together:
                    self._end(together[item.chunk])
                    continue
                try:
                    self._end(self._load_one(conn, item, verdicts[item.chunk]))
                except Exception as exc:
                    if self._stop(exc):
                        return []
                    if not is_transient(exc):
                        self._fail([item.chunk], exc)
                    elif not self.last_attempt:
                        self.retry_error = self.retry_error or exc
                        return []  # the retry loads this chunk and the rest
                    else:
                        self._fail([item.chunk], exc)
                        return [f for f in fetched[i + 1 :] if f.chunk not in together]
        return []

    def _stop(self, error: BaseException) -> bool:
        """A warehouse that refuses every write alike (disk full, a file locked by another process): the batch's
        chunks not ended yet fail with its one line, without trying each (nor a ledger row that would fail the
        same way), and the run stops submitting more. True when it was that."""
        explained = explain(error)
        if not isinstance(explained, WarehouseUnusableError):
            return False
        self.stopped = str(explained)
        for chunk in [c for c in self.chunks if c not in self.done]:
            self._end(ChunkResult(chunk=chunk, status=LedgerStatus.FAILED, error=self.stopped))
        return True

    def _chunk_load(self, item: _Fetched) -> ChunkLoad:
        return ChunkLoad(item.chunk, item.frame, item.checksum, **self._described(item))

    def _described(self, item: _Fetched) -> dict[str, Any]:
        chunk = item.chunk
        # a batch's chunks mostly share a window: one calendar lookup for them all
        key = (chunk.window_start, chunk.window_end, chunk.timeframe, chunk.calendar)
        if key not in self.final_through:
            intraday = get_timeframe(chunk.timeframe).intraday
            self.final_through[key] = final_through(
                chunk.window_start, chunk.window_end, intraday, self.as_of, chunk.calendar
            )
        return {**item.described, "complete_through": self.final_through[key]}

    def _load_one(self, conn: sa.Connection, item: _Fetched, verdict: ChunkVerdict) -> ChunkResult:
        chunk, frame = item.chunk, item.frame
        described = self._described(item)
        checksum = item.checksum
        run_id = self.run_id
        error = None if verdict.ok else self._rejection(verdict, frame)
        if verdict.ok:
            outcome = load_chunk(conn, chunk, frame, checksum=checksum, flow_run_id=run_id, **described)
        else:
            outcome = reject_chunk(
                conn,
                chunk,
                frame,
                verdict.bad_rows,
                verdict.failed_rules,
                flow_run_id=run_id,
                load_good_rows=self.on_invalid == "quarantine_rows",
                checksum=checksum,
                explanation=error,
                **described,
            )
        return ChunkResult(
            chunk=chunk,
            status=outcome.status,
            rows=len(frame),
            written=outcome.written,
            unchanged=outcome.unchanged,
            revised=outcome.revised,
            removed=outcome.removed,
            error=error,
            failed_expectations=list(verdict.failed_rules),
        )

    def _rejection(self, verdict: ChunkVerdict, frame: pd.DataFrame) -> str:
        """What became of a chunk that failed validation, which rows broke which rule, and the ways out: one line
        for the run's summary and the chunk's ledger row."""
        bad = f"{len(verdict.bad_rows)} bad row(s)"
        unreadable = int(frame["ts"].isna().sum()) if "ts" in frame.columns else 0
        if unreadable:  # the source's time was blank or unreadable: the provider kept the row to say so
            bad += f" ({unreadable} with an unreadable time)"
        hours, ways_out = (
            self.provider.capabilities.session_hours,
            WaysOut(self.on_invalid == "reject", self.hours_option),
        )
        rules = explain_verdict(verdict, frame, hours=hours, ways_out=ways_out)
        if self.on_invalid == "quarantine_rows":
            good = len(frame) - len(verdict.bad_rows)
            return f"{bad} quarantined, the other {good} loaded: {rules}"
        return f"{bad}; all {len(frame)} quarantined, none loaded: {rules}"


def _results(loads: list[ChunkLoad], outcomes: Mapping[int, LoadOutcome]) -> dict[Chunk, ChunkResult]:
    """What became of the chunks a many-chunk load path (`settle_unchanged`, `load_fresh_chunks`) handled."""
    return {
        loads[i].chunk: ChunkResult(
            chunk=loads[i].chunk,
            status=o.status,
            rows=o.rows,
            written=o.written,
            unchanged=o.unchanged,
            revised=o.revised,
            removed=o.removed,
        )
        for i, o in outcomes.items()
    }


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
    ended."""
    return batch_end(_Batch(chunks, warehouse_url, provider_options, on_invalid, limits).run())


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
