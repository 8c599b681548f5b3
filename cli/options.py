"""Options several commands share."""

from __future__ import annotations

import argparse


def series_options(p: argparse.ArgumentParser, series: bool = True, timeframes: bool = False) -> None:
    """--warehouse, and (`series`) --provider, --symbols and --timeframe (several with `timeframes`)."""
    p.add_argument(
        "--warehouse",
        help="SQLAlchemy URL (env CANDLEFLOW_WAREHOUSE_URL; default sqlite:///candleflow.db)",
    )
    if series:
        p.add_argument("--provider", default="synthetic", help="provider name (default synthetic)")
        p.add_argument(
            "--symbols",
            required=True,
            help=(
                "comma-separated symbols, e.g. AAPL,MSFT; @FILE for a file of them (one per line, # comments); "
                "universe:NAME for a universe kept in the warehouse (candleflow universe)"
            ),
        )
        what = "comma-separated timeframes of 1m, 5m, 15m, 1h, 1d" if timeframes else "1m, 5m, 15m, 1h or 1d"
        p.add_argument("--timeframe", default="1d", help=f"{what} (default 1d)")
