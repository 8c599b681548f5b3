"""The batch engine called directly, without Prefect: a real SQLite warehouse, the real synthetic provider. The batch
rules (each chunk ends on its own, a split rejection, the gates) and the retry rules (what a retry redoes, what
the last attempt fails, a vendor's Retry-After) are pinned here; tests/test_flows.py runs them under Prefect."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa

from candleflow.model import Chunk, LedgerStatus
from ingest import Attempt, Progress, run_batch
from providers.base import FetchRequest, FetchResult
from providers.errors import TransientProviderError
from providers.synthetic import SyntheticProvider
from warehouse.engine import get_engine
from warehouse.queries import read_ledger
from warehouse.schema import ensure_schema

NOW = "2025-06-30T00:00:00+00:00"  # the synthetic vendor's clock: every bar of 2024 has closed
RUN = "run-1"


def chunk(symbol: str, start: str = "2024-01-01", end: str = "2025-01-01") -> Chunk:
    return Chunk("synthetic", symbol, "1d", pd.Timestamp(start, tz="UTC"), pd.Timestamp(end, tz="UTC"))


class CountedSynthetic(SyntheticProvider):
    """The synthetic vendor, counting the requests it answers (or refuses)."""

    def __init__(self, **options: Any) -> None:
        super().__init__(now=NOW, **options)
        self.asked: list[tuple[str, ...]] = []

    def fetch(self, request: FetchRequest) -> FetchResult:
        self.asked.append(request.symbols)
        return super().fetch(request)


class RateLimitedOnce(CountedSynthetic):
    """Answers 429 with Retry-After to the first request for each of `limited`, then answers it."""

    def __init__(self, limited: set[str], retry_after: float) -> None:
        super().__init__()
        self.limited, self.retry_after = set(limited), retry_after

    def fetch(self, request: FetchRequest) -> FetchResult:
        symbol = request.symbols[0]
        if symbol in self.limited:
            self.limited.discard(symbol)
            raise TransientProviderError("HTTP 429", provider=self.name, http_status=429, retry_after=self.retry_after)
        return super().fetch(request)


class CountingGates:
    """Gates that let everything through and record what the batch asked of them."""

    def __init__(self, burst: int) -> None:
        self.burst = burst
        self.taken: list[int] = []
        self.held = 0

    def take_requests(self, count: int) -> None:
        self.taken.append(count)

    def hold_warehouse(self) -> AbstractContextManager[object]:
        @contextmanager
        def hold() -> Iterator[None]:
            self.held += 1
            yield

        return hold()


@pytest.fixture
def warehouse(sqlite_url: str) -> sa.Engine:
    engine = get_engine(sqlite_url)
    ensure_schema(engine)
    return engine


def ledger(engine: sa.Engine) -> dict[str, LedgerStatus]:
    return {f"{e.symbol} {e.window_start.year}": e.status for e in read_ledger(engine)}


def test_a_batch_loads_each_chunk_in_order_and_holds_the_warehouse_once(warehouse: sa.Engine) -> None:
    chunks = [chunk("AAPL"), chunk("MSFT"), chunk("IBM")]
    gates = CountingGates(burst=2)
    outcome = run_batch(chunks, CountedSynthetic(), warehouse, "reject", attempt=Attempt(RUN), gates=gates)
    assert [r.chunk for r in outcome.results] == chunks
    assert [(r.status, r.rows, r.written) for r in outcome.results] == [(LedgerStatus.LOADED, 252, 252)] * 3
    assert gates.taken == [2, 1] and gates.held == 1  # request slots by burst; one warehouse slot for the batch
    assert len(outcome.stages.spans) == 1 and outcome.stopped is None
    again = run_batch(chunks, CountedSynthetic(), warehouse, "reject", attempt=Attempt("run-2"))
    assert [(r.status, r.written, r.unchanged) for r in again.results] == [(LedgerStatus.LOADED, 0, True)] * 3


def test_a_retry_redoes_only_the_chunks_that_did_not_end(warehouse: sa.Engine, reference_url: str) -> None:
    chunks = [chunk(f"E{i:02d}") for i in range(12)]
    run_batch(chunks[:3], CountedSynthetic(seed=41), warehouse, "reject", attempt=Attempt("run-0"))  # held already
    options = {"transient_failure_rate": 0.25, "transient_failures_per_request": 1, "seed": 41}
    first, progress = CountedSynthetic(**options), Progress()
    with pytest.raises(TransientProviderError):
        run_batch(chunks, first, warehouse, "reject", attempt=Attempt(RUN, last=False), progress=progress)
    settled = ledger(warehouse)
    flaky = {c.symbol for c in chunks} - {c.symbol for c in progress.done}
    assert flaky and len(progress.done) == 12 - len(flaky)  # the others ended at once, whatever the flaky ones do
    assert len(settled) == 12 - len(flaky - {c.symbol for c in chunks[:3]})
    unchanged = {c.symbol for c, r in progress.done.items() if r.unchanged}
    assert unchanged == {c.symbol for c in chunks[:3]} - flaky

    retry = CountedSynthetic(**options)
    outcome = run_batch(chunks, retry, warehouse, "reject", attempt=Attempt(RUN, last=True), progress=progress)
    assert {symbols[0] for symbols in retry.asked} == flaky  # no chunk that ended is fetched again, unchanged ones too
    assert [r.chunk for r in outcome.results] == chunks
    assert {r.chunk.symbol for r in outcome.results if r.unchanged} == {c.symbol for c in chunks[:3]}
    assert len(outcome.stages.spans) == 2  # both attempts' time

    clean_engine = get_engine(reference_url)
    ensure_schema(clean_engine)
    run_batch(chunks[:3], CountedSynthetic(seed=41), clean_engine, "reject", attempt=Attempt("run-0"))
    clean = run_batch(chunks, CountedSynthetic(seed=41), clean_engine, "reject", attempt=Attempt(RUN))
    assert [(r.status, r.rows, r.written, r.unchanged) for r in outcome.results] == [
        (r.status, r.rows, r.written, r.unchanged) for r in clean.results
    ]


def test_the_last_attempt_fails_transient_chunks_in_the_ledger_and_raises_nothing(warehouse: sa.Engine) -> None:
    chunks = [chunk("AAPL"), chunk("MSFT")]
    provider = RateLimitedOnce({"MSFT"}, retry_after=30.0)
    began = time.monotonic()
    outcome = run_batch(chunks, provider, warehouse, "reject", attempt=Attempt(RUN, last=True))
    assert time.monotonic() - began < 10, "no retry follows: nothing to wait for"
    assert [r.status for r in outcome.results] == [LedgerStatus.LOADED, LedgerStatus.FAILED]
    assert "TransientProviderError" in (outcome.results[1].error or "")
    assert ledger(warehouse) == {"AAPL 2024": LedgerStatus.LOADED, "MSFT 2024": LedgerStatus.FAILED}


def test_before_the_last_attempt_a_retry_after_is_waited_out(warehouse: sa.Engine) -> None:
    provider = RateLimitedOnce({"AAPL"}, retry_after=0.5)
    began = time.monotonic()
    with pytest.raises(TransientProviderError):
        run_batch([chunk("AAPL")], provider, warehouse, "reject", attempt=Attempt(RUN, last=False))
    assert time.monotonic() - began >= 0.5
    assert ledger(warehouse) == {}  # nothing ended: the retry does it all


def test_a_terminal_error_fails_its_chunk_at_once_and_the_batch_goes_on(warehouse: sa.Engine) -> None:
    chunks = [chunk("NOPE"), chunk("AAPL")]
    provider = CountedSynthetic(unknown_symbols=("NOPE",))
    outcome = run_batch(chunks, provider, warehouse, "reject", attempt=Attempt(RUN, last=False))  # no raise
    assert [r.status for r in outcome.results] == [LedgerStatus.FAILED, LedgerStatus.LOADED]
    assert "unknown symbol NOPE" in (outcome.results[0].error or "")
    retry, progress = CountedSynthetic(unknown_symbols=("NOPE",)), Progress(done={r.chunk: r for r in outcome.results})
    again = run_batch(chunks, retry, warehouse, "reject", attempt=Attempt(RUN), progress=progress)
    assert retry.asked == [] and [r.status for r in again.results] == [LedgerStatus.FAILED, LedgerStatus.LOADED]
    assert again.results[0].error == outcome.results[0].error


def test_a_rejected_chunk_of_many_years_is_split_and_a_retry_reads_its_parts(warehouse: sa.Engine) -> None:
    """One bad bar in five years of daily bars: only its year is rejected; the retry of a batch that already
    ended every part fetches nothing and reports the same parts, with the expectations they failed."""
    whole = chunk("AAPL", "2020-01-01", "2025-01-01")
    options = {"invalid_chunk_rate": 1.0, "seed": 3}
    progress = Progress()
    outcome = run_batch(
        [whole], CountedSynthetic(**options), warehouse, "reject", attempt=Attempt(RUN), progress=progress
    )
    statuses = [r.status for r in outcome.results]
    assert len(statuses) == 5 and statuses.count(LedgerStatus.REJECTED) == 1
    assert [r.chunk.window_start.year for r in outcome.results] == [2020, 2021, 2022, 2023, 2024]
    rejected = next(r for r in outcome.results if r.status is LedgerStatus.REJECTED)

    retry = CountedSynthetic(**options)
    again = run_batch([whole], retry, warehouse, "reject", attempt=Attempt(RUN), progress=progress)
    assert retry.asked == []
    assert [(r.chunk, r.status, r.written, r.failed_expectations) for r in again.results] == [
        (r.chunk, r.status, r.written, r.failed_expectations) for r in outcome.results
    ]
    assert rejected.failed_expectations
    assert next(r.error for r in again.results if r.status is LedgerStatus.REJECTED) == rejected.error
