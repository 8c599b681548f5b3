"""Parsing and checking what users type: symbols and dates. Each error names the input and the fix."""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterable
from typing import Any

from candleflow.errors import BadInputError

SYMBOL_PATTERN = re.compile(r"[A-Z0-9.\-/^=]{1,32}")


def parse_symbols(value: str | Iterable[str]) -> list[str]:
    """Split, upper-case, de-duplicate (keeping order) and check symbols."""
    items = value.split(",") if isinstance(value, str) else list(value)
    symbols: list[str] = []
    for raw in items:
        symbol = str(raw).strip().upper()
        if not symbol:
            continue
        if not SYMBOL_PATTERN.fullmatch(symbol):
            raise BadInputError(
                f"malformed symbol {str(raw).strip()!r}: use 1-32 characters of A-Z 0-9 . - / ^ = "
                "(for example AAPL, BRK.B, ^GSPC)"
            )
        if symbol not in symbols:
            symbols.append(symbol)
    if not symbols:
        raise BadInputError("no symbols given: pass --symbols A,B,C")
    return symbols


def parse_date(value: str | dt.date | dt.datetime, name: str) -> dt.date:
    """Parse an inclusive session date given as YYYY-MM-DD."""
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value).strip())
    except ValueError:
        raise BadInputError(f"{name} date {value!r} is not a date: use YYYY-MM-DD, for example 2024-01-31") from None


def parse_options(pairs: Iterable[str]) -> dict[str, Any]:
    """`key=value` pairs from the command line; values are JSON where they parse as JSON, else text."""
    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise BadInputError(f"--option {pair!r} is not key=value: write e.g. --option seed=7")
        key, raw = pair.split("=", 1)
        try:
            out[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            out[key.strip()] = raw
    return out


def check_date_range(start: dt.date, end: dt.date) -> None:
    if end < start:
        raise BadInputError(f"end date {end} is before start date {start}: swap them or fix one")
