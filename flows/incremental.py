"""`incremental_update`: bring each series up to date from the warehouse's own watermark."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

from prefect import flow
from prefect.task_runners import ThreadPoolTaskRunner

from candleflow.errors import BadInputError
from candleflow.planning import incremental_start
from candleflow.report import RunSummary
from candleflow.sessions import check_in_range, previous_session
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
from tasks.warehouse import prepare_warehouse, read_watermarks_task


@flow(
    name="incremental_update",
    task_runner=ThreadPoolTaskRunner(max_workers=run_settings().task_workers),  # type: ignore[arg-type]
    validate_parameters=True,
)
def incremental_update(
    symbols: list[str],
    provider: str = "synthetic",
    timeframe: str = "1d",
    lookback_days: int = 30,
    overlap_days: int | None = None,
    end: dt.date | None = None,
    on_invalid: OnInvalid = "reject",
    warehouse_url: str | None = None,
    provider_options: dict[str, Any] | None = None,
    max_cost_usd: float | None = None,
) -> RunSummary:
    """Fetch each series from its watermark (newest loaded bar) minus an overlap up to `end` (default: today,
    UTC), so late provider corrections are picked up. A series with no bars starts `lookback_days` back.

    The overlap defaults to one session for daily bars and one day for intraday bars; `overlap_days` sets it.
    Overlapping chunks are always re-fetched (the ledger is not consulted): that is the point of the overlap.
    Dates whose file is not published yet (flat files) are left for a later run. `max_cost_usd` refuses the run
    before downloading when a charging vendor's quote is above it.
    """
    started = time.perf_counter()
    series = check_series_request(provider, symbols, timeframe, provider_options)
    tf, symbols, calendar = series.timeframe, series.symbols, series.calendar
    if lookback_days < 1:
        raise BadInputError(f"lookback_days {lookback_days} must be at least 1")
    end = end or dt.datetime.now(dt.UTC).date()
    prepare_warehouse(warehouse_url)
    watermarks = read_watermarks_task(warehouse_url, provider, symbols, tf.name)
    overlap = dt.timedelta(days=overlap_days) if overlap_days is not None else None
    chunks = []
    for symbol in symbols:
        mark = watermarks.get(symbol)
        before = previous_session(mark.date(), calendar) if mark is not None else None
        start = incremental_start(mark, tf, end, lookback_days, overlap, before)
        if start > end:
            continue
        check_in_range(start, end, calendar)
        chunks += plan_series(series, [symbol], start, end)
    summary = RunSummary(flow="incremental_update", planned=len(chunks))
    todo = drop_unpublished(summary, chunks, published_versions(series, chunks))
    check_budget(summary, series, todo, max_cost_usd)
    return run_chunks(
        summary,
        todo,
        provider=provider,
        warehouse_url=warehouse_url,
        provider_options=provider_options,
        on_invalid=on_invalid,
        started=started,
    )
