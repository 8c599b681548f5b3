"""Parsing and checking what users type: symbols and dates. Each error names the input and the fix."""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from candleflow.errors import BadInputError

SYMBOL_PATTERN = re.compile(r"[A-Z0-9.\-/^=]{1,32}")


@dataclass(frozen=True)
class SymbolRule:
    """Which tickers a provider takes, and whether it reads them as written. Every rule keeps out what could
    turn a ticker into SQL or a URL's query (spaces, quotes, `;`, `?`, `&`, `%`); the vendor rule has no `/` at
    all, and the csv provider checks that a ticker's file lies inside its directory."""

    pattern: re.Pattern[str]
    case_sensitive: bool  # False: `aapl` is AAPL; True: kept exactly as written (the vendor's tickers)
    words: str  # the rule for a person, with examples

    def check(self, raw: str) -> str:
        given = str(raw).strip()
        symbol = given if self.case_sensitive else given.upper()
        if not self.pattern.fullmatch(symbol):
            raise BadInputError(f"malformed symbol {given!r}: {self.words}")
        if self.case_sensitive and symbol == symbol.lower() != symbol.upper():
            raise BadInputError(
                f"symbol {given!r} has no capital letter: the vendor's tickers are case-sensitive, write "
                f"{symbol.upper()!r} (lower-case letters only mark share classes, preferreds and warrants)"
            )
        return symbol


# Typed symbols, upper-cased: the synthetic and csv providers, Databento's raw symbols, queries of any provider.
UPPER_CASE = SymbolRule(
    SYMBOL_PATTERN, False, "use 1-32 characters of A-Z 0-9 . - / ^ = (for example AAPL, BRK.B, ^GSPC)"
)
# Polygon's tickers exactly as its files and API write them: class shares (BRK.A), lower-case markers of
# preferreds and warrants, and the market prefixes of options, indices, currencies and crypto (O:, I:, C:, X:).
VENDOR_CASE = SymbolRule(
    re.compile(r"[A-Za-z0-9][A-Za-z0-9.:\-]{0,31}"),
    True,
    "use the vendor's ticker exactly as it writes it, 1-32 of A-Z a-z 0-9 . : - starting with a letter or digit "
    "(for example AAPL, BRK.A, O:AAPL240119C00150000)",
)

# Symbols of a query over any provider (`status` without --provider): either rule's tickers, case kept.
ANY_PROVIDER = SymbolRule(
    re.compile(r"[A-Za-z0-9.\-/^=:]{1,32}"),
    True,
    "use 1-32 characters of A-Z a-z 0-9 . - / ^ = : (for example AAPL, BRK.A, ^GSPC, O:AAPL240119C00150000)",
)


def parse_symbols(value: str | Iterable[str], rule: SymbolRule = UPPER_CASE, *, references: bool = False) -> list[str]:
    """Split, check by `rule` (upper-casing unless it keeps case) and de-duplicate symbols, keeping order. With
    `references`, file (`@PATH`) and universe (`universe:NAME`) entries are kept as given, for the run to
    resolve (candleflow.universes)."""
    from candleflow.universes import check_reference, is_reference

    items = value.split(",") if isinstance(value, str) else list(value)
    symbols: list[str] = []
    for raw in items:
        text = str(raw).strip()
        if not text:
            continue
        symbol = check_reference(text) if references and is_reference(text) else rule.check(text)
        if symbol not in symbols:
            symbols.append(symbol)
    if not symbols:
        raise BadInputError("no symbols given: pass --symbols A,B,C (or @FILE, or universe:NAME)")
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
