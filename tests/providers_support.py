"""Prepared instances of every registered provider, for the contract tests and flow tests."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from candleflow.timeframes import get_timeframe
from providers import get_provider
from providers.base import FetchRequest

SYMBOLS = ("AAPL", "MSFT")
SPAN = (pd.Timestamp("2024-01-01", tz="UTC"), pd.Timestamp("2024-04-01", tz="UTC"))


def csv_run(
    directory: Path, url: str, symbols: Sequence[str], start: dt.date, end: dt.date, **more: Any
) -> dict[str, Any]:
    """A backfill's arguments for the csv files in `directory` into the warehouse `url`; `more` adds any other
    argument (timeframe, mode, ...), and its `options` go into provider_options beside the directory."""
    options = {"directory": str(directory), **more.pop("options", {})}
    return dict(
        provider="csv", symbols=list(symbols), start=start, end=end, warehouse_url=url, **more, provider_options=options
    )


def synthetic_bars(
    symbol: str, timeframe: str, start: pd.Timestamp = SPAN[0], end: pd.Timestamp = SPAN[1]
) -> pd.DataFrame:
    request = FetchRequest((symbol,), get_timeframe(timeframe), start, end)
    return get_provider("synthetic").fetch(request).bars


def write_csv_dir(root: Path) -> Path:
    """Synthetic bars written as users hold them: Yahoo-style daily CSV (shuffled), plain 1h CSV.gz, 1m Parquet."""
    for symbol in SYMBOLS:
        daily = synthetic_bars(symbol, "1d")
        yahoo = pd.DataFrame(
            {
                "Date": daily["ts"].dt.strftime("%Y-%m-%d"),
                "Open": daily["open"],
                "High": daily["high"],
                "Low": daily["low"],
                "Close": daily["close"],
                "Adj Close": daily["close"] * 0.5,
                "Volume": daily["volume"],
            }
        )
        yahoo.sample(frac=1.0, random_state=3).to_csv(root / f"{symbol}.csv", index=False)
        hourly = synthetic_bars(symbol, "1h")
        (root / "1h").mkdir(exist_ok=True)
        hourly.drop(columns=["provider", "timeframe", "symbol"]).rename(columns={"ts": "timestamp"}).to_csv(
            root / "1h" / f"{symbol}.csv.gz", index=False
        )
        minutes = synthetic_bars(symbol, "1m", SPAN[0], pd.Timestamp("2024-01-15", tz="UTC"))
        minutes.drop(columns=["provider", "timeframe"]).to_parquet(root / f"{symbol}_1m.parquet", index=False)
    return root


def provider_factories(tmp_path: Path) -> dict[str, Callable[[], Any]]:
    csv_dir = write_csv_dir(tmp_path)
    return {
        "synthetic": lambda: get_provider("synthetic", {"unknown_symbols": ["NOPE"]}),
        "csv": lambda: get_provider("csv", {"directory": str(csv_dir)}),
    }
