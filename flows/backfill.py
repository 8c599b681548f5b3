"""`historical_backfill`: fill a date range for many symbols, skipping what the ledger already holds."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

from prefect import flow
from prefect.task_runners import ThreadPoolTaskRunner

from candleflow.inputs import check_date_range
from candleflow.planning import parse_mode, select_chunks
from candleflow.report import RunSummary
from candleflow.sessions import check_in_range
from candleflow.settings import run_settings
from flows.chunks import (
    check_budget,
    check_series_request,
    drop_unpublished,
    plan_series,
    published_versions,
    run_chunks,
)
from tasks.ingest import OnInvalid
from tasks.warehouse import prepare_warehouse, read_ledger_task


@flow(
    name="historical_backfill",
    task_runner=ThreadPoolTaskRunner(max_workers=run_settings().task_workers),  # type: ignore[arg-type]
    validate_parameters=True,
)
def historical_backfill(
    symbols: list[str],
    start: dt.date,
    end: dt.date,
    provider: str = "synthetic",
    timeframe: str = "1d",
    mode: str = "missing",
    on_invalid: OnInvalid = "reject",
    dry_run: bool = False,
    warehouse_url: str | None = None,
    provider_options: dict[str, Any] | None = None,
    max_cost_usd: float | None = None,
) -> RunSummary:
    """Backfill bars for `symbols` at `timeframe` for the inclusive session dates `start`..`end`.

    mode: `missing` (default) fetches chunks the ledger does not hold as loaded or empty; `failed` only
    chunks that ended failed or rejected; `all` everything. on_invalid: `reject` keeps a failing chunk out
    entirely; `quarantine_rows` loads its good rows. Either way bad rows go to `quarantine` and the run fails.
    max_cost_usd: for vendors that charge per request (databento), refuse the run before downloading anything
    when their quote for the chunks to fetch is above this many US dollars. A dry run prints the quote.
    """
    started = time.perf_counter()
    series = check_series_request(provider, symbols, timeframe, provider_options)
    tf, symbols = series.timeframe, series.symbols
    check_date_range(start, end)
    check_in_range(start, end, series.calendar)
    plan_mode = parse_mode(mode)

    chunks = plan_series(series, symbols, start, end)
    summary = RunSummary(flow="historical_backfill", planned=len(chunks), dry_run=dry_run)
    versions = published_versions(series, chunks)
    published = drop_unpublished(summary, chunks, versions)
    ledger = read_ledger_task(warehouse_url, provider, symbols, tf.name)
    adjustment = str(series.provider.adjustment)
    selection = select_chunks(published, ledger, plan_mode, adjustment=adjustment, versions=versions)
    summary.skipped, summary.todo = len(selection.skipped), selection.todo
    check_budget(summary, series, selection.todo, max_cost_usd)
    if dry_run:
        summary.elapsed_seconds = time.perf_counter() - started
        return summary
    prepare_warehouse(warehouse_url)
    return run_chunks(
        summary,
        selection.todo,
        provider=provider,
        warehouse_url=warehouse_url,
        provider_options=provider_options,
        on_invalid=on_invalid,
        started=started,
    )
