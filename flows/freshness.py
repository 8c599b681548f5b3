"""`freshness_check`: end Failed, so the failure Automation notifies, when a series of the universe lags more
than max_lag_sessions closed sessions; a symbol the vendor stopped listing is reported once, never a failure."""

from __future__ import annotations

import time
from typing import Annotated, Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger
from pydantic import Field

from candleflow.errors import StaleSeriesError
from candleflow.freshness import DEFAULT_MAX_LAG
from candleflow.timeframes import TimeframeName
from candleflow.universes import UniverseKind
from flows.form import OptionalText
from flows.inputs import FreshnessInputs, check_freshness_inputs
from flows.runs import candleflow_flow
from ingest.freshness import FreshnessReport
from providers import ProviderName
from tasks.ingest import current_flow_run_id
from tasks.notify import Notice, send_notice
from tasks.watch import publish_freshness, record_end, run_record


@task(name="measure-freshness", cache_policy=NO_CACHE)
def measure_freshness_task(inputs: FreshnessInputs, flow_run_id: str | None) -> FreshnessReport:
    return inputs.freshness(inputs.max_lag_sessions, ask_vendor=inputs.ask_vendor, flow_run_id=flow_run_id)


@candleflow_flow("freshness_check")
def freshness_check(
    universe: UniverseKind = "tickers",
    symbols: list[str] = [],  # noqa: B006 (never mutated; empty when universe is ALL)
    timeframes: Annotated[list[TimeframeName], Field(min_length=1)] = ["1d"],  # noqa: B006 (never mutated)
    provider: ProviderName = "synthetic",
    max_lag_sessions: Annotated[int, Field(ge=0)] = DEFAULT_MAX_LAG,
    ask_vendor: bool = True,
    provider_options: dict[str, Any] = {},  # noqa: B006 (never mutated; the UI form edits a dict default as JSON)
    calendar: OptionalText = None,
    warehouse_url: OptionalText = None,
) -> FreshnessReport:
    """Measure how many closed sessions of its calendar each series of the universe lags behind its newest bar,
    publish them laggards first, and end Failed when any lags more than max_lag_sessions, naming each with the
    reason the ledger holds (never loaded, failed, rejected, provider had no bars, not fetched since). A lagging
    symbol the vendor stopped listing is reported once, as delisted, and never fails a check.

    Args:
        universe: What symbols lists, as for the incremental update: tickers, ALL, named or file.
        symbols: The universe to watch, e.g. AAPL, MSFT, SPY (or @PATH, universe:NAME, ALL), as the incremental
            update keeps it.
        timeframes: Bar sizes to watch, each of 1m, 5m, 15m, 1h, 1d.
        provider: Whose bars to watch.
        max_lag_sessions: A series lagging more than this many closed sessions is stale (0: every series must
            hold the last closed session).
        ask_vendor: Ask the vendor (polygon, synthetic) whether lagging symbols were delisted; it needs the key.
        provider_options: Options for the provider, e.g. {"seed": 7} for synthetic. Keys do not belong here.
        calendar: Exchange calendar of the symbols (default: CANDLEFLOW_CALENDARS on the worker, else XNYS).
        warehouse_url: SQLAlchemy URL of the warehouse. Empty: the worker's CANDLEFLOW_WAREHOUSE_URL, else
            sqlite:///candleflow.db in its working directory. No password here: the worker's
            CANDLEFLOW_WAREHOUSE_PASSWORD gives it.
    """
    inputs = check_freshness_inputs(
        provider=provider,
        symbols=symbols,
        universe=universe,
        timeframes=timeframes,
        max_lag_sessions=max_lag_sessions,
        ask_vendor=ask_vendor,
        provider_options=provider_options,
        warehouse_url=warehouse_url,
        calendar=calendar or None,
    )
    started = time.perf_counter()
    report = measure_freshness_task(inputs, current_flow_run_id())
    record_end(run_record("freshness_check", report.ok, time.perf_counter() - started), inputs.warehouse_url)
    publish_freshness("freshness_check", report, f"{inputs.stored_as} freshness")
    logger = get_run_logger()
    logger.info("%s", report.headline())
    for row in report.newly_delisted:
        logger.info("newly delisted (reported once, not a failure): %s", row.describe())
    if not report.ok:
        raise StaleSeriesError(report.message())
    if report.newly_delisted:  # a passing check still tells, once, what the vendor stopped listing
        try:
            send_notice(Notice(f"candleflow: freshness_check: {len(report.newly_delisted)} delisted", report.message()))
        except Exception:  # the check's outcome stands; the artifact and the log say it
            logger.exception("could not send the notice of the delisted series")
    return report
