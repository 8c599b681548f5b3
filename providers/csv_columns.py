"""How the csv provider reads a file: its rows (cached while the file is unchanged) and which of its columns
are candleflow's (any case, `_` and `-` read as spaces; see `ALIASES`)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import pandas as pd

from providers.errors import TerminalProviderError

# Accepted column names (compared lower-case, with _ and - read as spaces), first match wins.
ALIASES: dict[str, tuple[str, ...]] = {
    "ts": ("ts", "timestamp", "datetime", "date time"),
    "date": ("date", "day", "session"),
    "time": ("time",),
    "symbol": ("ticker", "symbol", "sym"),
    "open": ("open", "open price", "o"),
    "high": ("high", "high price", "h"),
    "low": ("low", "low price", "l"),
    "close": ("close", "last", "close price", "last price", "c"),
    "volume": ("volume", "vol", "v"),
    "vwap": ("vwap", "vw"),
    "trades": ("trades", "transactions", "number of trades", "n"),
    "adj close": ("adj close", "adjusted close", "adj. close", "adjclose"),
    "adj volume": ("adj volume", "adjusted volume", "adj. volume"),
}


def map_columns(columns: pd.Index) -> dict[str, str]:
    """candleflow's column -> the file's column, for every column candleflow knows."""
    normal = {str(c).strip().lower().replace("_", " ").replace("-", " "): str(c) for c in columns}
    mapped: dict[str, str] = {}
    for name, aliases in ALIASES.items():
        found = next((normal[a] for a in aliases if a in normal and normal[a] not in mapped.values()), None)
        if found is not None:
            mapped[name] = found
    return mapped


def used_and_ignored(columns: pd.Index, mapped: dict[str, str]) -> str:
    used = ", ".join(f"{column}->{name}" for name, column in mapped.items())
    ignored = [str(c) for c in columns if str(c) not in mapped.values()]
    return f"columns used: {used or 'none'}; ignored: {', '.join(ignored) or 'none'}"


def as_written(row: pd.Series) -> str:
    """A file's row as its columns wrote it: `Date=31/02/2024, Open=10.5, ...` (blank cells empty)."""
    return ", ".join(f"{column}={'' if pd.isna(value) else value}" for column, value in row.items())


def read_rows(path: Path) -> pd.DataFrame:
    """A file's rows, read once while it is unchanged (a file of many tickers serves every symbol's chunks)."""
    stat = path.stat()
    return _load(str(path), stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=4)
def _load(path: str, _mtime_ns: int, _size: int) -> pd.DataFrame:
    """Only an empty cell is missing: `n/a` or `NA` stay as written (a ticker, or the text a quarantined row
    shows)."""
    try:
        if path.endswith(".parquet"):
            return pd.read_parquet(path)
        return pd.read_csv(path, keep_default_na=False, na_values=[""])
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise TerminalProviderError(f"cannot read {path}: {exc}", provider="csv") from None
