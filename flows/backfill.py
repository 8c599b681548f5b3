"""`historical_backfill`: fill a date range for many symbols, skipping what the ledger already holds."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

from candleflow.model import OnInvalid
from candleflow.planning import PlanModeName
from candleflow.report import RunSummary
from candleflow.timeframes import TimeframeName
from candleflow.universes import UniverseKind
from flows.chunks import TASK_ASKS, carry_out
from flows.form import OptionalAmount, OptionalText
from flows.inputs import check_backfill
from flows.plan import plan_backfill
from flows.runs import candleflow_flow
from providers import ProviderName
from tasks.secrets import check_key_block


@candleflow_flow("historical_backfill")
def historical_backfill(
    *,
    universe: UniverseKind = "tickers",
    symbols: list[str] = [],  # noqa: B006 (never mutated; empty when universe is ALL)
    start: dt.date,
    end: dt.date,
    provider: ProviderName = "synthetic",
    timeframe: TimeframeName = "1d",
    timeframes: list[TimeframeName] = [],  # noqa: B006 (never mutated; a list, not None: a plain list field in the UI)
    mode: PlanModeName = "missing",
    on_invalid: OnInvalid = "reject",
    dry_run: bool = False,
    max_cost_usd: OptionalAmount = None,
    provider_options: dict[str, Any] = {},  # noqa: B006 (never mutated; the UI form edits a dict default as JSON)
    calendar: OptionalText = None,
    warehouse_url: OptionalText = None,
) -> RunSummary:
    """Backfill bars for the symbols at one timeframe (or several) over the session dates start..end.

    Args:
        universe: What symbols lists. tickers: the tickers themselves (an entry may also be @PATH, universe:NAME
            or ALL). ALL: every ticker the provider's data holds each session (flat files, databento, polygon 1d,
            synthetic); leave symbols empty. named: the names of universes kept in the warehouse (candleflow
            universe refresh), e.g. us-common-stocks. file: paths of files of tickers on the worker, one per line.
        symbols: Tickers to backfill, e.g. AAPL, MSFT, BRK.B.
            Each entry is a ticker (polygon's exactly as the vendor writes it: BRK.A,
            O:AAPL240119C00150000), @PATH for a file of tickers on the worker (one per line),
            universe:NAME for a universe kept in the warehouse (candleflow universe refresh), or ALL alone for
            every ticker the provider's data holds each session (flat files, databento, polygon at 1d, synthetic).
        start: First session date to fill (inclusive).
        end: Last session date to fill (inclusive); on or after start.
        provider: Where the bars come from. synthetic needs nothing; the others need their keys on the worker.
        timeframe: Bar size: 1m, 5m, 15m, 1h or 1d.
        timeframes: Several bar sizes in one run, e.g. 1d and 1h; when any are given, they replace timeframe.
        mode: missing fetches what the ledger does not hold as loaded or empty; failed only chunks that ended
            failed or rejected; all everything, rewriting only bars that changed and removing those the source
            no longer has.
        on_invalid: A chunk failing validation: reject keeps all of it out (of a chunk longer than a year of daily
            or a month of intraday bars, only the years or months with bad rows); quarantine_rows loads its good rows.
            Bad rows go to the quarantine table either way, and the run ends Failed.
        dry_run: Plan only: say which chunks would be fetched (and a paid vendor's quote); fetch and write nothing.
        max_cost_usd: For vendors that charge (databento): refuse the run before downloading when their quote is
            above this many US dollars. Empty for no limit.
        provider_options: Options for the provider, e.g. {"seed": 7} for synthetic or {"dataset": "XNAS.ITCH"}
            for databento. Keys do not belong here: they come from the worker's environment or Secret blocks.
        calendar: Exchange calendar of the symbols: an exchange_calendars name (XNYS, XLON, XTKS, ...) or a
            pandas_market_calendars one (CME_Equity, CMEGlobex_Crude, ...). Empty: each symbol's calendar from
            CANDLEFLOW_CALENDARS on the worker, else XNYS.
        warehouse_url: SQLAlchemy URL of the warehouse. Empty: the worker's CANDLEFLOW_WAREHOUSE_URL, else
            sqlite:///candleflow.db in its working directory. No password here (Prefect keeps parameters in plain
            text): the worker's CANDLEFLOW_WAREHOUSE_PASSWORD gives it.
    """
    started = time.perf_counter()
    inputs = check_backfill(
        provider=provider,
        symbols=symbols,
        universe=universe,
        timeframes=timeframes or [timeframe],
        start=start,
        end=end,
        mode=mode,
        on_invalid=on_invalid,
        dry_run=dry_run,
        max_cost_usd=max_cost_usd,
        provider_options=provider_options,
        warehouse_url=warehouse_url,
        calendar=calendar or None,
    )
    check_key_block(inputs.provider, inputs.provider_options)
    summary = plan_backfill(inputs, TASK_ASKS)
    return carry_out(summary, inputs, inputs.start, inputs.end, started=started)
