"""Universes: the symbols input names tickers, files of tickers and named universes, resolved to one list.

Wherever a run takes symbols (the command line's `--symbols`, a flow's `symbols`, the UI's form, `prefect.yaml`),
each entry is one of:
- a ticker, checked by the provider's symbol rule (candleflow.inputs.SymbolRule);
- `@PATH`: a file of tickers, one per line; `#` starts a comment, blank lines are skipped;
- `universe:NAME`: a universe kept in the warehouse, refreshed from a vendor's reference data
  (`candleflow universe refresh NAME ...`);
- `ALL`, alone: every ticker the provider's data holds for each session (a flat file, a grouped-daily answer),
  fetched as one chunk per session with one ledger row each (EVERY_SYMBOL). The ticker ALL (Allstate) is then
  given in a file or a named universe.

The entries resolve, in order and without duplicates, to the run's symbols; what each reference resolved to is
kept (`Universe.parts`) so the run can report it. Pure but for reading the files; the named universes are looked
up through a function the caller gives (the warehouse is not this layer's).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

from candleflow.errors import BadInputError
from candleflow.inputs import SymbolRule
from candleflow.model import EVERY_SYMBOL, every_ticker

EVERY = "ALL"  # the symbols entry for every ticker of the provider's data
FILE_PREFIX = "@"
NAMED_PREFIX = "universe:"
NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9_.-]{0,47}")
NAME_RULE = "1-48 of a-z 0-9 _ . - starting with a letter or digit (for example us-common-stocks)"
MAX_FILE_BYTES = 16 * 1024 * 1024  # a file of tickers, not a data file given by mistake


def check_universe_name(name: str) -> str:
    """A named universe's name, or BadInputError saying what names look like."""
    if not NAME_PATTERN.fullmatch(name):
        raise BadInputError(f"universe name {name!r}: use {NAME_RULE}")
    return name


def is_reference(entry: str) -> bool:
    """Whether a symbols entry names a file, a universe or every ticker (`ALL`) rather than a ticker."""
    return entry.startswith(FILE_PREFIX) or entry.startswith(NAMED_PREFIX) or entry.strip().upper() == EVERY


def check_reference(entry: str) -> str:
    """A reference's syntax (the file or universe itself is looked at when the run resolves it)."""
    if entry.strip().upper() == EVERY:
        return EVERY
    if entry.startswith(FILE_PREFIX):
        if not entry[len(FILE_PREFIX) :].strip():
            raise BadInputError(f"symbols entry {entry!r} names no file: write @PATH, e.g. @universe.txt")
        return FILE_PREFIX + entry[len(FILE_PREFIX) :].strip()
    name = entry[len(NAMED_PREFIX) :].strip()
    if not NAME_PATTERN.fullmatch(name):
        raise BadInputError(f"universe name {name!r} in {entry!r}: use {NAME_RULE}")
    return NAMED_PREFIX + name


# What a run's `symbols` list, chosen in the UI's form (the flows' `universe` parameter): tickers (and any of the
# references above), every ticker, the names of universes kept in the warehouse, or paths of files of tickers.
UniverseKind = Literal["tickers", "ALL", "named", "file"]  # a select in the UI's form
UNIVERSE_KINDS: tuple[str, ...] = get_args(UniverseKind)


def universe_entries(kind: str, entries: Sequence[str]) -> list[str]:
    """The symbols input a form's universe choice and its `symbols` list mean: `named` makes each entry
    `universe:NAME`, `file` each `@PATH`, `ALL` takes no entries (or ALL itself); `tickers` keeps them as given."""
    given = [str(e).strip() for e in entries if str(e).strip()]
    if kind == "tickers":
        return given
    if kind == EVERY:
        if given and [g.upper() for g in given] != [EVERY]:
            raise BadInputError(
                f"universe ALL takes every ticker of the provider's data: leave symbols empty (it lists {given[:3]}); "
                "choose universe tickers to run those"
            )
        return [EVERY]
    if kind == "named":
        if not given:
            raise BadInputError("universe named: list in symbols the names of universes kept, e.g. us-common-stocks")
        return [NAMED_PREFIX + g.removeprefix(NAMED_PREFIX).strip() for g in given]
    if kind == "file":
        if not given:
            raise BadInputError("universe file: list in symbols the paths of files of tickers on the worker")
        return [FILE_PREFIX + g.removeprefix(FILE_PREFIX).strip() for g in given]
    raise BadInputError(f"unknown universe {kind!r}: use one of {', '.join(UNIVERSE_KINDS)}")


@dataclass(frozen=True)
class Part:
    """One entry of the symbols input and what it resolved to."""

    entry: str  # `@PATH`, `universe:NAME`, or `listed` for the tickers given one by one
    symbols: tuple[str, ...]
    note: str = ""  # e.g. when a named universe was refreshed and from what

    @property
    def count(self) -> int:
        return len(self.symbols)


@dataclass(frozen=True)
class Universe:
    """A run's symbols, resolved, with what each file or named universe contributed."""

    symbols: list[str]
    parts: tuple[Part, ...] = ()

    @property
    def every(self) -> bool:
        """Every ticker of the provider's data (`ALL`): the run's one symbol is EVERY_SYMBOL."""
        return every_ticker(self.symbols)

    @property
    def referenced(self) -> bool:
        """Whether any entry was a file or a named universe (the run then reports what they resolved to)."""
        return any(p.entry != "listed" for p in self.parts)

    def entries(self) -> list[str]:
        """The symbols input that resolves to this universe again: its references and tickers, in order (what a
        run hands on as its parameter: a flow run's parameters stay short for a universe of 11,000 tickers)."""
        out: list[str] = []
        for part in self.parts:
            out.extend(part.symbols if part.entry == "listed" else [part.entry])
        return out or list(self.symbols)

    def describe(self) -> str:
        """`universe:sp500 (503) + @extra.txt (12) + 2 listed: 515 symbols`."""
        if self.every:
            return "ALL: every ticker the provider's data holds for each session"
        pieces = [f"{p.entry} ({p.count})" if p.entry != "listed" else f"{p.count} listed" for p in self.parts]
        return " + ".join(pieces) + f": {len(self.symbols)} symbol{'s' if len(self.symbols) != 1 else ''}"


@dataclass(frozen=True)
class Named:
    """A named universe as its keeper holds it."""

    symbols: tuple[str, ...]
    note: str  # what it was refreshed from, and when


NamedLookup = Callable[[str], Named]


def resolve(entries: Sequence[str], rule: SymbolRule, named: NamedLookup | None = None) -> Universe:
    """The run's symbols: tickers as given, files read, named universes looked up (`named` raises BadInputError
    for one it does not keep). Each file's tickers are checked by `rule`, naming the file and line."""
    if EVERY in entries:
        if len(entries) > 1:
            raise BadInputError(
                f"symbols entry {EVERY} means every ticker of the provider's data: give it alone (for the ticker "
                f"{EVERY} itself, list it in a file, @FILE, or a named universe)"
            )
        return Universe([EVERY_SYMBOL], (Part(EVERY, ()),))
    symbols: dict[str, None] = {}
    parts: list[Part] = []
    listed: list[str] = []
    listed_at = 0  # where the tickers given one by one stand among the parts: at their first
    for entry in entries:
        if entry.startswith(FILE_PREFIX):
            part = Part(entry, tuple(read_symbol_file(entry[len(FILE_PREFIX) :], rule)))
        elif entry.startswith(NAMED_PREFIX):
            if named is None:
                raise BadInputError(f"{entry}: named universes are kept in a warehouse, and none is given here")
            found = named(entry[len(NAMED_PREFIX) :])
            part = Part(entry, tuple(rule.check(s) for s in found.symbols), found.note)
        else:
            if not listed:
                listed_at = len(parts)
            listed.append(entry)
            symbols.setdefault(entry)
            continue
        parts.append(part)
        for symbol in part.symbols:
            symbols.setdefault(symbol)
    if listed:
        parts.insert(listed_at, Part("listed", tuple(dict.fromkeys(listed))))
    if not symbols:
        given = ", ".join(p.entry for p in parts) or "nothing"
        raise BadInputError(f"no symbols: {given} resolved to none; pass tickers, @FILE or universe:NAME")
    return Universe(list(symbols), tuple(parts))


def read_symbol_file(path_text: str, rule: SymbolRule) -> list[str]:
    """The tickers of a file, one per line, `#` comments and blank lines skipped, duplicates dropped."""
    path = Path(path_text).expanduser()
    shown = f"symbols file {path_text}"
    try:
        if path.is_dir():
            raise BadInputError(f"{shown} is a directory: give a text file of tickers, one per line")
        if path.stat().st_size > MAX_FILE_BYTES:
            raise BadInputError(f"{shown} is over {MAX_FILE_BYTES // 2**20} MiB: give a text file of tickers")
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise BadInputError(f"{shown}: no such file (relative paths start at {Path.cwd()})") from None
    except UnicodeDecodeError:
        raise BadInputError(f"{shown} is not UTF-8 text: give a text file of tickers, one per line") from None
    except OSError as exc:
        raise BadInputError(f"{shown} cannot be read: {exc.strerror or exc}") from None
    found: dict[str, None] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        entry = line.split("#", 1)[0].strip()
        if not entry:
            continue
        if is_reference(entry):
            raise BadInputError(f"{shown} line {number}: {entry!r}: a symbols file lists tickers, not other files")
        try:
            found.setdefault(rule.check(entry))
        except BadInputError as exc:
            raise BadInputError(f"{shown} line {number}: {exc}") from None
    if not found:
        raise BadInputError(f"{shown} lists no tickers: write one per line (# starts a comment)")
    return list(found)


# Markets of a vendor's reference data (Polygon's tickers reference: `market`), and the shape of its filters.
MARKETS = ("stocks", "otc", "indices", "fx", "crypto", "options")
_TYPE = re.compile(r"[A-Z][A-Z0-9]{0,11}")  # CS, ETF, ADRC, PFD, WARRANT, ...
_MIC = re.compile(r"[A-Z][A-Z0-9]{3}")  # an ISO 10383 market identifier: XNYS, XNAS, ARCX, ...
_UNDERLYING = re.compile(r"[A-Z][A-Z0-9.]{0,9}")  # a stock's ticker as options reference data names it
_PARENT = re.compile(r"[A-Z0-9]{1,10}\.FUT")  # a futures product's every contract, in Databento's parent symbology


@dataclass(frozen=True)
class ReferenceQuery:
    """Which of a vendor's tickers a named universe holds: its reference data filtered by market, type, primary
    exchange and whether they trade now. `check()` names a bad filter and the values it takes."""

    market: str = "stocks"
    type: str | None = None  # the vendor's ticker type: CS (common stock), ETF, ADRC, PFD, WARRANT, ...
    exchange: str | None = None  # primary exchange, as a MIC: XNYS, XNAS, ARCX, ...
    active: bool = True  # False: delisted tickers too
    parents: tuple[str, ...] = ()  # futures products whose contracts it holds (Databento: ES.FUT, NQ.FUT)
    underlyings: tuple[str, ...] = ()  # market options: the stocks whose option contracts it holds (AAPL, SPY)

    def check(self) -> ReferenceQuery:
        for parent in self.parents:
            if not _PARENT.fullmatch(parent):
                raise BadInputError(
                    f"parent symbol {parent!r}: use a futures product's root and .FUT in capitals, e.g. ES.FUT, CL.FUT"
                )
        if self.market not in MARKETS:
            raise BadInputError(f"unknown market {self.market!r}: use one of {', '.join(MARKETS)}")
        if (self.market == "options") != bool(self.underlyings):
            raise BadInputError(
                "market options takes the underlyings whose contracts it lists, e.g. --underlying AAPL"
                if self.market == "options"
                else f"underlyings ({', '.join(self.underlyings)}) are for market options: add --market options"
            )
        if self.market == "options" and (self.type or self.exchange):
            raise BadInputError("market options lists contracts by underlying: give no --type or --exchange")
        for underlying in self.underlyings:
            if not _UNDERLYING.fullmatch(underlying):
                raise BadInputError(f"underlying {underlying!r}: use the stock's ticker in capitals, e.g. AAPL, BRK.B")
        if self.type is not None and not _TYPE.fullmatch(self.type):
            raise BadInputError(
                f"ticker type {self.type!r}: use the vendor's type code in capitals, e.g. CS, ETF, ADRC, PFD, WARRANT"
            )
        if self.exchange is not None and not _MIC.fullmatch(self.exchange):
            raise BadInputError(
                f"exchange {self.exchange!r}: use the primary exchange's MIC in capitals, e.g. XNYS, XNAS, ARCX"
            )
        return self

    def describe(self) -> str:
        """`market=stocks type=CS exchange=XNAS active only`: what a universe was refreshed from."""
        parts = [f"market={self.market}"]
        parts += [f"type={self.type}"] if self.type else []
        parts += [f"exchange={self.exchange}"] if self.exchange else []
        parts.append("active only" if self.active else "active and delisted")
        if self.parents:
            parts = [f"parent={','.join(self.parents)}", parts[-1]]
        if self.underlyings:
            parts = [parts[0], f"underlying={','.join(self.underlyings)}", *parts[1:]]
        return " ".join(parts)

    def without_parents(self, provider: str) -> ReferenceQuery:
        """The query checked for a provider that has no parent symbology."""
        if self.parents:
            raise BadInputError(
                f"provider {provider} has no parent symbols ({', '.join(self.parents)}): resolve futures contracts "
                "with provider databento"
            )
        return self.check()
