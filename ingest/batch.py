"""The batch engine: one batch of chunks fetched by request, validated in one suite call per calendar, loaded one
chunk per transaction. A chunk that ends (loaded, empty, rejected, or failed for good) is recorded at once, so a
transient error elsewhere in the batch never costs it its outcome: the engine raises that error for the caller
to retry, and the retry, handed the same `Progress`, redoes only the chunks that had not ended."""

from __future__ import annotations

import time
from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import sqlalchemy as sa

from candleflow.model import Chunk, ChunkResult, LedgerStatus, OnInvalid
from candleflow.planning import group_chunks, split_failed
from candleflow.report import StageTimes
from expectations import validate_bars
from expectations.validate import ChunkVerdict
from ingest.load import Fetched, Finality, chunk_result, load_results, rejection
from ingest.retry import is_transient, retry_after_seconds
from providers.base import Provider, request_for
from providers.errors import TransientProviderError
from warehouse.batch_load import load_extensions, load_fresh_chunks, settle_unchanged
from warehouse.errors import WarehouseUnusableError, describe, explain
from warehouse.ledger import record_failure
from warehouse.load import load_chunk
from warehouse.quarantine import reject_chunk


@dataclass(frozen=True)
class Attempt:
    """Which attempt of a batch this is, as its caller knows it."""

    flow_run_id: str | None = None  # the run whose ledger rows the batch writes
    last: bool = True  # no retry follows: a transient error fails its chunks now


@dataclass
class Progress:
    """What the attempts of one batch have done so far. The caller hands the same object to each attempt: a retry
    redoes only the chunks that did not end (those found unchanged included: their fetch may have cost money),
    reports the others as they ended (revised and removed bars, failed expectations), and its time adds up."""

    done: dict[Chunk, ChunkResult] = field(default_factory=dict)  # sub-chunks of a split chunk included
    parts: dict[Chunk, list[Chunk]] = field(default_factory=dict)  # chunks split after failing validation
    stages: StageTimes = field(default_factory=StageTimes)


class Gates(Protocol):
    """The limits a batch shares with every other (in a task: Prefect's global concurrency limits)."""

    @property
    def burst(self) -> int:
        """Request slots a batch may take at once."""
        ...

    def take_requests(self, count: int) -> None:
        """Wait for `count` slots of the provider's request rate."""
        ...

    def hold_warehouse(self) -> AbstractContextManager[object]:
        """Hold one slot of the warehouse's concurrency limit while loading."""
        ...


class NoGates:
    """No shared limits: requests go at once, loads do not wait."""

    burst = 1

    def take_requests(self, count: int) -> None:
        return None

    def hold_warehouse(self) -> AbstractContextManager[object]:
        return nullcontext()


@dataclass
class BatchOutcome:
    """What one batch did: a result per chunk, in the order given, and where its time went."""

    results: list[ChunkResult]
    stages: StageTimes
    stopped: str | None = None  # the warehouse refuses every write alike (disk full, locked): the run stops


def run_batch(
    chunks: list[Chunk],
    provider: Provider[Any],
    warehouse: sa.Engine,
    on_invalid: OnInvalid,
    *,
    attempt: Attempt | None = None,
    gates: Gates | None = None,
    progress: Progress | None = None,
) -> BatchOutcome:
    """Fetch `chunks` from `provider` (one request per window, or per group of symbols for providers that serve
    many), validate them together, then load or quarantine each in its own transaction with its ledger row.
    Raises the first transient error when `attempt` is not the last, after ending every chunk it could and noting
    it in `progress`, which the caller hands to the retry."""
    progress = progress if progress is not None else Progress()
    return _Batch(chunks, provider, warehouse, on_invalid, attempt or Attempt(), gates or NoGates(), progress).run()


class _Batch:
    def __init__(
        self,
        chunks: list[Chunk],
        provider: Provider[Any],
        warehouse: sa.Engine,
        on_invalid: OnInvalid,
        attempt: Attempt,
        gates: Gates,
        progress: Progress,
    ) -> None:
        self.chunks, self.provider, self.engine = chunks, provider, warehouse
        self.on_invalid, self.gates = on_invalid, gates
        self.run_id, self.last_attempt = attempt.flow_run_id, attempt.last
        # a provider with an `hours` option (csv): named as a way out of a rejection
        self.hours_option = "hours" in type(provider.settings).model_fields
        self.done, self.parts, self.stages = progress.done, progress.parts, progress.stages
        self.retry_error: BaseException | None = None  # a transient error to raise so the caller retries the rest
        self.stopped: str | None = None  # why the warehouse cannot take any chunk now (WarehouseUnusableError)
        self.finality: Finality  # set when fetching: how far the fetched windows were final

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
            raise self.retry_error
        return BatchOutcome([result for c in self.chunks for result in self._results_of(c)], self.stages, self.stopped)

    def _ended(self, chunk: Chunk) -> bool:
        """Ended as a whole, or split into sub-chunks that all ended."""
        parts = self.parts.get(chunk)
        return chunk in self.done or (parts is not None and all(p in self.done for p in parts))

    def _results_of(self, chunk: Chunk) -> list[ChunkResult]:
        """A chunk's result, or its sub-chunks' results when it was split."""
        parts = [self.done[p] for p in self.parts.get(chunk, []) if p in self.done]
        return parts + ([self.done[chunk]] if chunk in self.done else [])

    def _split_rejected(
        self, fetched: list[Fetched], verdicts: Mapping[Chunk, ChunkVerdict]
    ) -> tuple[list[Fetched], dict[Chunk, ChunkVerdict]]:
        """Chunks that failed validation and span several calendar years (daily) or months (intraday) become one
        chunk each (`split_failed`): only those holding bad rows are rejected, the others load."""
        out: list[Fetched] = []
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
                out.append(Fetched(part.chunk, frame.iloc[part.rows].reset_index(drop=True), item.described))
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

    def _fetch(self, todo: list[Chunk]) -> list[Fetched]:
        began = time.monotonic()
        # Read the clock before fetching: a session that closes during the fetch is not yet final in what it returns.
        provider = self.provider
        self.finality = Finality(as_of=provider.now())
        out: list[Fetched] = []
        requests = group_chunks(todo, provider.symbols_per_request)
        burst = self.gates.burst
        for i, group in enumerate(requests):
            if i % burst == 0:
                self.gates.take_requests(min(burst, len(requests) - i))
            try:
                result = provider.fetch(replace(request_for(group), pace=self.gates.take_requests))
            except TransientProviderError as exc:
                if self.last_attempt:
                    self._fail(group, exc)
                else:  # the retry fetches it again; the rest go on now, so each chunk keeps its own retries
                    time.sleep(retry_after_seconds(exc))
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
                out += [Fetched(c, frame, described) for c in known]
            else:
                by_symbol = dict(tuple(frame.groupby("symbol", sort=False)))
                empty = frame.iloc[0:0]
                out += [Fetched(c, by_symbol.get(c.symbol, empty).reset_index(drop=True), described) for c in known]
        self.stages.fetch += time.monotonic() - began
        return out

    def _validate(self, fetched: list[Fetched]) -> dict[Chunk, ChunkVerdict]:
        """One suite call per exchange calendar in the batch (almost always one): the fixed cost of a call is paid
        per batch, not per chunk."""
        began = time.monotonic()
        verdicts: dict[Chunk, ChunkVerdict] = {}
        by_calendar: dict[str, list[Fetched]] = {}
        for item in fetched:
            by_calendar.setdefault(item.chunk.calendar, []).append(item)
        for calendar, items in by_calendar.items():
            parts = [(item.chunk, item.frame) for item in items]
            report = validate_bars(parts, calendar=calendar, hours=self.provider.capabilities.session_hours)
            verdicts |= {v.chunk: v for v in report.verdicts}
        self.stages.validate += time.monotonic() - began
        return verdicts

    def _load(self, fetched: list[Fetched], verdicts: Mapping[Chunk, ChunkVerdict]) -> None:
        """Each chunk's bars (or its quarantined rows) and its ledger row in one transaction, holding one slot of
        the warehouse's concurrency limit for the whole batch."""
        if not fetched:
            return
        began = time.monotonic()
        with self.gates.hold_warehouse():
            pending = list(fetched)
            while pending:
                pending = self._load_on_one_connection(pending, verdicts)
        self.stages.load += time.monotonic() - began

    def _load_on_one_connection(self, fetched: list[Fetched], verdicts: Mapping[Chunk, ChunkVerdict]) -> list[Fetched]:
        """Load chunks on one connection: first those the ledger already holds exactly (checked together: nothing
        to write), then those whose windows hold no bar yet together where the warehouse can (one COPY, one
        commit), then an update's chunks that extend their series' rows (one commit), every other one in its own
        transaction. Returns the chunks still to load on a new
        connection when it broke on the last attempt (before it, the caller retries them)."""
        with self.engine.connect() as conn:
            try:
                loads = [self.finality.chunk_load(item) for item in fetched if verdicts[item.chunk].ok]
                together = load_results(loads, settle_unchanged(conn, loads))
                rest = [load for load in loads if load.chunk not in together]
                together |= load_results(rest, load_fresh_chunks(conn, rest, flow_run_id=self.run_id))
                rest = [load for load in rest if load.chunk not in together]
                together |= load_results(rest, load_extensions(conn, rest, flow_run_id=self.run_id))
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

    def _load_one(self, conn: sa.Connection, item: Fetched, verdict: ChunkVerdict) -> ChunkResult:
        chunk, frame = item.chunk, item.frame
        described = self.finality.described(item)
        if verdict.ok:
            outcome = load_chunk(conn, chunk, frame, checksum=item.checksum, flow_run_id=self.run_id, **described)
            return chunk_result(chunk, outcome, rows=len(frame))
        error = rejection(
            verdict,
            frame,
            self.on_invalid,
            hours=self.provider.capabilities.session_hours,
            hours_option=self.hours_option,
        )
        outcome = reject_chunk(
            conn,
            chunk,
            frame,
            verdict.bad_rows,
            verdict.failed_rules,
            flow_run_id=self.run_id,
            load_good_rows=self.on_invalid == "quarantine_rows",
            checksum=item.checksum,
            explanation=error,
            **described,
        )
        return chunk_result(
            chunk, outcome, rows=len(frame), error=error, failed_expectations=list(verdict.failed_rules)
        )
