"""`refresh_universe`: keep a named universe current from a provider's reference data (Polygon's tickers
reference, filtered by market, type, exchange and whether they trade), on a schedule or from the UI, so the runs
that take `universe:NAME` (or the form's universe choice `named`) follow the listings without anyone retyping
them."""

from __future__ import annotations

import time
from typing import Any

from prefect.artifacts import create_markdown_artifact
from prefect.logging import get_run_logger

from flows.form import OptionalText, RefreshForm, read_form
from flows.runs import candleflow_flow
from ingest.universes import Refreshed, listing_source
from tasks.secrets import with_secrets
from tasks.universes import refresh_universe_task
from tasks.watch import record_end, run_record
from warehouse.engine import check_reachable

SHOWN = 50  # tickers added or dropped listed by name in the run's artifact


@candleflow_flow("refresh_universe")
def refresh_universe(
    name: str,
    provider: str = "polygon",
    market: str = "stocks",
    ticker_type: OptionalText = None,
    exchange: OptionalText = None,
    include_inactive: bool = False,
    parents: list[str] = [],  # noqa: B006 (never mutated; a plain list field in the UI)
    underlyings: list[str] = [],  # noqa: B006 (never mutated; a plain list field in the UI)
    provider_options: dict[str, Any] = {},  # noqa: B006 (never mutated; the UI form edits a dict default as JSON)
    warehouse_url: OptionalText = None,
) -> Refreshed:
    """List the provider's tickers that match the filters and keep them as universe NAME in the warehouse,
    replacing what it held in one transaction. A listing that matches nothing is refused and the universe is left
    as it was, so a schedule never empties it.

    Args:
        name: The universe's name, e.g. us-common-stocks: runs then take universe:us-common-stocks as symbols (or
            universe named with us-common-stocks).
        provider: A provider that lists its tickers: polygon (its key on the worker), databento (with parents)
            or synthetic.
        market: stocks, otc, indices, fx, crypto, or options (with underlyings).
        ticker_type: The vendor's ticker type, e.g. CS (common stock), ETF, ADRC, PFD, WARRANT. Empty: every type.
        exchange: Primary exchange as a MIC, e.g. XNYS, XNAS, ARCX. Empty: every exchange.
        include_inactive: Delisted tickers too (default: active ones only).
        parents: databento: futures products whose every contract the universe holds, e.g. ES.FUT (and no
            market, type or exchange filter).
        underlyings: polygon, market options: stocks whose every option contract the universe holds, e.g. AAPL
            (contracts not expired; with include_inactive, expired ones too).
        provider_options: Options for the provider, e.g. {"listed_symbols": 500} for synthetic. Keys do not
            belong here: they come from the worker's environment or Secret blocks.
        warehouse_url: SQLAlchemy URL of the warehouse. Empty: the worker's CANDLEFLOW_WAREHOUSE_URL, else
            sqlite:///candleflow.db in its working directory. No password here.
    """
    form = read_form(
        RefreshForm,
        {
            "name": name,
            "provider": provider,
            "market": market,
            "ticker_type": ticker_type,
            "exchange": exchange,
            "include_inactive": include_inactive,
            "parents": parents,
            "underlyings": underlyings,
            "provider_options": provider_options or None,
            "warehouse_url": warehouse_url,
        },
    )
    query = form.query()
    listing_source(form.provider, with_secrets(form.provider, form.provider_options))  # lists, has its key
    check_reachable(form.warehouse_url, writes=True)  # before the vendor is asked
    started = time.perf_counter()
    done = refresh_universe_task(form.name, form.provider, form.provider_options, query, form.warehouse_url)
    get_run_logger().info("%s (run %.1f s)", done.describe(), time.perf_counter() - started)
    record_end(run_record("refresh_universe", True, time.perf_counter() - started), form.warehouse_url)
    create_markdown_artifact(
        markdown=_report(done), key=f"universe-{form.name}", description=f"universe {form.name} refreshed"
    )
    return done


def _report(done: Refreshed) -> str:
    def listed(title: str, tickers: tuple[str, ...]) -> str:
        if not tickers:
            return f"**{title}:** none"
        more = f", and {len(tickers) - SHOWN} more" if len(tickers) > SHOWN else ""
        return f"**{title} ({len(tickers)}):** " + ", ".join(f"`{t}`" for t in tickers[:SHOWN]) + more

    u = done.universe
    lines = [
        f"## universe {u.name}",
        f"{u.members} tickers from {u.definition}, refreshed {u.refreshed_at:%Y-%m-%d %H:%M} UTC ({done.change()}).",
        "",
        listed("added", done.added if done.before is not None else ()),
        "",
        listed("dropped", done.dropped),
        "",
        f"Runs take it as `universe:{u.name}`, or with the universe choice `named` and `{u.name}` as symbols.",
    ]
    return "\n".join(lines)
