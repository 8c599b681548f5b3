"""`repair_gaps`: fetch again exactly what `candleflow gaps` reports as missing over a lookback, nothing else."""

from __future__ import annotations

import time
from typing import Annotated, Any

from pydantic import Field

from candleflow.model import OnInvalid
from candleflow.report import RunSummary
from candleflow.timeframes import TimeframeName
from candleflow.universes import UniverseKind
from flows.chunks import TASK_ASKS, carry_out
from flows.form import OptionalAmount, OptionalDate, OptionalText
from flows.inputs import check_repair
from flows.plan import plan_repair, repair_window
from flows.runs import candleflow_flow
from providers import ProviderName
from tasks.secrets import check_key_block


@candleflow_flow("repair_gaps")
def repair_gaps(
    universe: UniverseKind = "tickers",
    symbols: list[str] = [],  # noqa: B006 (never mutated; empty when universe is ALL)
    timeframes: Annotated[list[TimeframeName], Field(min_length=1)] = ["1d"],  # noqa: B006 (never mutated)
    provider: ProviderName = "synthetic",
    lookback_days: Annotated[int, Field(ge=1)] = 30,
    end: OptionalDate = None,
    dry_run: bool = False,
    on_invalid: OnInvalid = "reject",
    max_cost_usd: OptionalAmount = None,
    provider_options: dict[str, Any] = {},  # noqa: B006 (never mutated; the UI form edits a dict default as JSON)
    calendar: OptionalText = None,
    warehouse_url: OptionalText = None,
) -> RunSummary:
    """Find the closed sessions of the lookback that have no bars (or fewer than a full session) and that the
    ledger does not explain (never fetched, failed, or lost after loading), and fetch exactly the chunks that
    cover them: one per run of consecutive such sessions, cut at the timeframe's calendar periods. Sessions the
    provider had no bars for, and chunks rejected by validation (see quarantine), are left alone.

    Args:
        universe: What symbols lists. tickers: the tickers themselves (an entry may also be @PATH, universe:NAME
            or ALL). ALL: every ticker the provider's data holds each session (flat files, databento, polygon 1d,
            synthetic); leave symbols empty. named: the names of universes kept in the warehouse (candleflow
            universe refresh), e.g. us-common-stocks. file: paths of files of tickers on the worker, one per line.
        symbols: The universe to repair, e.g. AAPL, MSFT, SPY.
            Each entry is a ticker (polygon's exactly as the vendor writes it: BRK.A,
            O:AAPL240119C00150000), @PATH for a file of tickers on the worker (one per line),
            universe:NAME for a universe kept in the warehouse (candleflow universe refresh), or ALL alone for
            every ticker the provider's data holds each session (flat files, databento, polygon at 1d, synthetic).
        timeframes: Bar sizes to repair, each of 1m, 5m, 15m, 1h, 1d.
        provider: Whose bars to repair. synthetic needs nothing; the others need their keys on the worker.
        lookback_days: How many days before end to look for gaps.
        end: Last session date to look at (inclusive). Empty: today (UTC); sessions not closed yet are skipped.
        dry_run: Only say which chunks would be fetched (and a paid vendor's quote); fetch and write nothing.
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
    inputs = check_repair(
        provider=provider,
        symbols=symbols,
        universe=universe,
        timeframes=timeframes,
        lookback_days=lookback_days,
        end=end,
        dry_run=dry_run,
        on_invalid=on_invalid,
        max_cost_usd=max_cost_usd,
        provider_options=provider_options,
        warehouse_url=warehouse_url,
        calendar=calendar or None,
    )
    check_key_block(inputs.provider, inputs.provider_options)
    first, last = repair_window(inputs)
    summary = plan_repair(inputs, TASK_ASKS)
    return carry_out(summary, inputs, first, last, started=started)
