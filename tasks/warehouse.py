"""Tasks around the warehouse: prepare it, read the ledger and watermarks, record failed chunks."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from candleflow.model import Chunk, LedgerEntry
from tasks.ingest import retry_only_transient
from warehouse.engine import check_reachable, checkpoint, ensure_database, get_engine, safe_url
from warehouse.errors import one_line_errors
from warehouse.ledger import record_failure
from warehouse.queries import has_schema, ledger_of, read_watermarks
from warehouse.schema import ensure_schema, ensure_window_index


@task(name="prepare_warehouse", cache_policy=NO_CACHE, retry_condition_fn=retry_only_transient)
def prepare_warehouse(warehouse_url: str | None, every_symbol: bool = False) -> None:
    """Check the warehouse is reachable and create missing tables (and, for a run of every ticker, the window
    index it reads by). Idempotent, so a connection dropped halfway is retried like anywhere else
    (flows.chunks.prepare sets the retries). A PostgreSQL database that does not exist yet is created when the
    warehouse user may (check_reachable refused the run otherwise)."""
    with one_line_errors():
        if ensure_database(warehouse_url):
            engine = get_engine(warehouse_url)
            get_run_logger().warning("created the warehouse database %s", safe_url(engine.url))
        engine = check_reachable(warehouse_url)
        ensure_schema(engine)
        if every_symbol:
            ensure_window_index(engine)


@task(name="read_ledger", cache_policy=NO_CACHE)
def read_ledger_task(
    warehouse_url: str | None,
    provider: str,
    symbols: Sequence[str],
    timeframe: str,
    since: pd.Timestamp | None = None,
) -> list[LedgerEntry]:
    with one_line_errors():
        return ledger_of(warehouse_url, provider, symbols, timeframe, since)


@task(name="read_watermarks", cache_policy=NO_CACHE)
def read_watermarks_task(
    warehouse_url: str | None, provider: str, symbols: Sequence[str], timeframe: str
) -> dict[str, pd.Timestamp]:
    with one_line_errors():
        engine = check_reachable(warehouse_url)
        if not has_schema(engine):
            return {}
        return read_watermarks(engine, provider, symbols, timeframe)


@task(
    name="record_chunk_failure",
    cache_policy=NO_CACHE,
    task_run_name="failed {chunk.symbol}:{chunk.timeframe}",
)
def record_chunk_failure(chunk: Chunk, error: str, warehouse_url: str | None, flow_run_id: str | None) -> None:
    with one_line_errors():
        record_failure(get_engine(warehouse_url), chunk, error, flow_run_id=flow_run_id)


def checkpoint_warehouse(warehouse_url: str | None) -> None:
    """At the end of a run: a SQLite warehouse's file holds everything the run committed (see engine.checkpoint)."""
    checkpoint(get_engine(warehouse_url))
