"""`incremental_update`: bring each series up to date from the warehouse's own watermark."""

from __future__ import annotations

import datetime as dt
import time
from typing import Annotated, Any

from prefect.logging import get_run_logger
from pydantic import Field

from candleflow.freshness import DEFAULT_MAX_LAG
from candleflow.model import Chunk, LedgerEntry, OnInvalid, every_ticker
from candleflow.planning import extension_of, incremental_start, period_start, utc_midnight
from candleflow.report import RunSummary
from candleflow.sessions import check_in_range, previous_session
from candleflow.timeframes import ChunkPeriod, TimeframeName
from candleflow.universes import UniverseKind
from flows.chunks import TASK_ASKS, carry_out, prepare
from flows.fanout import in_partition
from flows.form import OptionalAmount, OptionalCount, OptionalDate, OptionalText
from flows.inputs import UpdateInputs, check_update
from flows.plan import (
    check_budget,
    drop_unpublished,
    note_requests,
    plan_series,
    published_versions,
    universe_line,
)
from flows.runs import candleflow_flow
from providers import ProviderName
from tasks.secrets import check_key_block
from tasks.warehouse import read_watermarks_task
from tasks.watch import publish_freshness


@candleflow_flow("incremental_update")
def incremental_update(
    universe: UniverseKind = "tickers",
    symbols: list[str] = [],  # noqa: B006 (never mutated; empty when universe is ALL)
    timeframes: Annotated[list[TimeframeName], Field(min_length=1)] = ["1d"],  # noqa: B006 (never mutated)
    provider: ProviderName = "synthetic",
    lookback_days: Annotated[int, Field(ge=1)] = 30,
    overlap_days: OptionalCount = None,
    end: OptionalDate = None,
    on_invalid: OnInvalid = "reject",
    max_cost_usd: OptionalAmount = None,
    provider_options: dict[str, Any] = {},  # noqa: B006 (never mutated; the UI form edits a dict default as JSON)
    calendar: OptionalText = None,
    warehouse_url: OptionalText = None,
) -> RunSummary:
    """Fetch each series from its watermark (its newest loaded bar) minus an overlap, up to end, so late vendor
    corrections are picked up. Overlapping chunks are always fetched again: that is the point of the overlap.

    Args:
        universe: What symbols lists. tickers: the tickers themselves (an entry may also be @PATH, universe:NAME
            or ALL). ALL: every ticker the provider's data holds each session (flat files, databento, polygon 1d,
            synthetic); leave symbols empty. named: the names of universes kept in the warehouse (candleflow
            universe refresh), e.g. us-common-stocks. file: paths of files of tickers on the worker, one per line.
        symbols: The universe to keep current, e.g. AAPL, MSFT, SPY.
            Each entry is a ticker (polygon's exactly as the vendor writes it: BRK.A,
            O:AAPL240119C00150000), @PATH for a file of tickers on the worker (one per line),
            universe:NAME for a universe kept in the warehouse (candleflow universe refresh), or ALL alone for
            every ticker the provider's data holds each session (flat files, databento, polygon at 1d, synthetic).
        timeframes: Bar sizes to keep current, each of 1m, 5m, 15m, 1h, 1d.
        provider: Where the bars come from. synthetic needs nothing; the others need their keys on the worker.
        lookback_days: How far back a series with no bars yet starts, in days.
        overlap_days: How many days before the watermark to fetch again. Empty: one session for daily bars, one
            day for intraday bars.
        end: Last session date to fetch (inclusive). Empty: today (UTC).
        on_invalid: A chunk failing validation: reject keeps all of it out (of a chunk longer than a year of daily
            or a month of intraday bars, only the years or months with bad rows); quarantine_rows loads its good rows.
        max_cost_usd: For vendors that charge (databento): refuse the run before downloading when their quote is
            above this many US dollars. Empty for no limit.
        provider_options: Options for the provider, e.g. {"seed": 7} for synthetic. Keys do not belong here.
        calendar: Exchange calendar of the symbols: an exchange_calendars name (XNYS, XLON, XTKS, ...) or a
            pandas_market_calendars one (CME_Equity, CMEGlobex_Crude, ...). Empty: each symbol's calendar from
            CANDLEFLOW_CALENDARS on the worker, else XNYS.
        warehouse_url: SQLAlchemy URL of the warehouse. Empty: the worker's CANDLEFLOW_WAREHOUSE_URL, else
            sqlite:///candleflow.db in its working directory. No password here (Prefect keeps parameters in plain
            text): the worker's CANDLEFLOW_WAREHOUSE_PASSWORD gives it.
    """
    started = time.perf_counter()
    inputs = check_update(
        provider=provider,
        symbols=symbols,
        universe=universe,
        timeframes=timeframes,
        lookback_days=lookback_days,
        overlap_days=overlap_days,
        end=end,
        on_invalid=on_invalid,
        max_cost_usd=max_cost_usd,
        provider_options=provider_options,
        warehouse_url=warehouse_url,
        calendar=calendar or None,
    )
    check_key_block(inputs.provider, inputs.provider_options)
    last = inputs.end or dt.datetime.now(dt.UTC).date()
    prepare(inputs.warehouse_url, every_symbol=inputs.universe.every)
    overlap = dt.timedelta(days=inputs.overlap_days) if inputs.overlap_days is not None else None
    summary = RunSummary(flow="incremental_update", universe=universe_line(inputs))
    todo: list[Chunk] = []
    first = last
    for timeframe in inputs.timeframes:
        series = inputs.series(timeframe)
        marks = read_watermarks_task(inputs.warehouse_url, inputs.stored_as, series.symbols, timeframe.name)
        starts: dict[str, dt.date] = {}
        for symbol in series.symbols:
            mark = marks.get(symbol)
            calendar = inputs.calendar_of(symbol)
            before = previous_session(mark.date(), calendar) if mark is not None else None
            start = incremental_start(mark, timeframe, last, inputs.lookback_days, overlap, before)
            if start > last:
                continue
            check_in_range(start, last, calendar)
            starts[symbol] = start
        if not starts:
            continue
        first = min(first, *starts.values())
        # each chunk extends its series' row of the calendar period (one row per series and period, not per day)
        period = series.provider.capabilities.chunk_period or timeframe.chunk_period
        rows: list[LedgerEntry] = []
        if period is not ChunkPeriod.SESSION and not every_ticker(series.symbols):
            since = period_start(utc_midnight(min(starts.values())), period)
            rows = TASK_ASKS.ledger(inputs.warehouse_url, inputs.stored_as, list(starts), timeframe.name, since)
        by_symbol: dict[str, list[LedgerEntry]] = {}
        for entry in rows:
            by_symbol.setdefault(entry.symbol, []).append(entry)
        adjustment = str(series.provider.adjustment)
        chunks: list[Chunk] = []
        for symbol, start in starts.items():
            own = by_symbol.get(symbol, [])
            chunks += [extension_of(c, own, period, adjustment) for c in plan_series(series, [symbol], start, last)]
        summary.planned += len(chunks)
        todo += drop_unpublished(summary, chunks, published_versions(series, chunks, TASK_ASKS))
    check_budget(summary, inputs.series(inputs.timeframes[0]), todo, inputs.max_cost_usd, TASK_ASKS)  # one quote
    summary.todo = todo
    note_requests(summary, inputs.source)
    try:
        return carry_out(summary, inputs, first, last, started=started, prepared=True)
    finally:
        if not in_partition():
            publish_update_freshness(inputs)


def publish_update_freshness(inputs: UpdateInputs) -> None:
    """The freshness of the run's series after it, laggards first, as an artifact (at the default max lag of a
    check; the vendor is not asked about delistings here: the freshness check does that)."""
    try:
        report = inputs.freshness(DEFAULT_MAX_LAG, ask_vendor=False)
        publish_freshness("incremental_update", report, f"{inputs.stored_as} freshness after the update")
    except Exception:  # the run's own outcome stands; its artifact is not worth hiding it
        get_run_logger().exception("could not measure the freshness of the run's series")
