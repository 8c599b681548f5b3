"""The provider contract. A provider is one class: a name, one capabilities record, one settings class, and one
verb, `fetch(request) -> FetchResult`. Providers know nothing of Prefect or the warehouse.

What a provider can do beyond fetching is said by its capabilities, never by which methods it happens to have:
`versioned_sources` providers answer `source_versions`, `charges` providers answer `estimate_cost`."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar, cast

import pandas as pd

from candleflow.errors import BadInputError
from candleflow.inputs import UPPER_CASE, SymbolRule
from candleflow.model import EVERY_SYMBOL, Adjustment, Chunk
from candleflow.sessions import SessionHours
from candleflow.timeframes import ChunkPeriod, Timeframe, get_timeframe
from candleflow.universes import ReferenceQuery
from providers.settings import ProviderSettings


@dataclass(frozen=True)
class FetchRequest:
    """Bars for `symbols` at `timeframe` with open time in the half-open UTC window [start, end)."""

    symbols: tuple[str, ...]
    timeframe: Timeframe
    start: pd.Timestamp
    end: pd.Timestamp
    # Waits for `n` more slots of the vendor's request rate. The caller took one for the request; a provider that
    # sends more than one HTTP request for it (one per symbol, one per session) takes a slot for each of the rest.
    pace: Callable[[int], None] | None = field(default=None, compare=False, repr=False)

    @property
    def every(self) -> bool:
        """Every ticker the source holds for the window (`--symbols ALL`), not a list of them."""
        return self.symbols == (EVERY_SYMBOL,)

    def take(self, requests: int = 1) -> None:
        """Before sending `requests` more HTTP requests for this one."""
        if self.pace is not None and requests > 0:
            self.pace(requests)


def request_for(chunks: Sequence[Chunk]) -> FetchRequest:
    """One provider request for chunks that share a window (one symbol each)."""
    first = chunks[0]
    symbols = tuple(c.symbol for c in chunks)
    return FetchRequest(symbols, get_timeframe(first.timeframe), first.window_start, first.window_end)


@dataclass(frozen=True)
class FetchResult:
    """What a fetch returns: the bars as a canonical frame (providers/frames.py), and what the ledger needs."""

    bars: pd.DataFrame
    source_version: str | None = None  # the version of the source the bars came from (a flat file's ETag)
    # Requested symbols the vendor does not know, when it answered for the others of a many-symbol request
    # (their chunks fail as terminal errors; the others load).
    unknown_symbols: tuple[str, ...] = ()


# A named source of a provider (`csv:quandl`): stored as part of its provider key, so it must stay short and plain.
SOURCE_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]{0,23}")
SOURCE_RULE = "use 1-24 of a-z 0-9 _ - (for example quandl)"


@dataclass(frozen=True)
class Capabilities:
    """What a provider is like, as the planner, the chunk task, the rate limits and the coverage report need it."""

    requests_per_second: float  # the vendor's request budget: Prefect's rate limit slot decay
    # How many symbols one request may serve. Above 1, the flow groups chunks sharing a window into one task,
    # which fetches once and still validates, loads and records each symbol's chunk on its own.
    max_symbols_per_request: int = 1
    # None: chunks follow the timeframe's period. SESSION: one chunk per session date (one file per date).
    chunk_period: ChunkPeriod | None = None
    # False when the provider cannot tell an unknown symbol from one with no bars in the window.
    knows_symbols: bool = True
    # True when an interval without trades has no bar (vendors' aggregates): a short session is not a gap then.
    bars_only_when_traded: bool = False
    charges: bool = False  # the vendor charges for data and quotes a request first (`estimate_cost`)
    versioned_sources: bool = False  # sources are published objects with versions (`source_versions`)
    # Its sources are collections the user names (`csv:<source>`), stored apart from other collections.
    named_sources: bool = False
    # Which intraday bars belong to a session: `regular` hours only, or `extended` (pre- and post-market too).
    session_hours: SessionHours = "regular"
    # Its fetch waits on a network (a vendor's API, a bucket), so a small run is spread over the task workers and
    # their waits overlap. False when it reads local files or computes bars: that work holds the GIL, and more
    # threads would only add each task's fixed costs (a suite call, the limits, the ledger).
    remote: bool = True
    # Which tickers it takes and whether as written: vendors' tickers are case-sensitive (BRK.A, O:AAPL...).
    symbol_rule: SymbolRule = UPPER_CASE
    # It answers `list_symbols`: the tickers of its reference data, for named universes (candleflow.universes).
    lists_symbols: bool = False
    # The timeframes at which one request answers every ticker of a session (a day's flat file, grouped daily):
    # `--symbols ALL` fetches those as one chunk per session (EVERY_SYMBOL), with one ledger row each.
    every_symbol: tuple[str, ...] = ()
    # It answers `delistings`: which of given tickers its reference data says it stopped listing, and when (a
    # freshness check then reports a lagging series as delisted, once, instead of failing each night).
    tells_delistings: bool = False


S = TypeVar("S", bound=ProviderSettings)


class Provider(Generic[S]):
    """Base of every provider. Build one with its settings, or with options: `SyntheticProvider(seed=7)`."""

    name: ClassVar[str]
    settings_class: ClassVar[type[ProviderSettings]]
    capabilities: Capabilities  # the class's record; an instance may narrow it by its settings (csv's `hours`)

    def __init__(self, settings: S | None = None, **options: Any) -> None:
        self.settings: S = settings if settings is not None else cast(S, self.settings_class.from_options(options))

    def symbols_per_request(self, chunks: Sequence[Chunk]) -> int:
        """How many of `chunks` (one window, one symbol each) one request serves: the capabilities' record. A
        provider whose answer depends on the request's shape says so here (polygon: grouped daily)."""
        return self.capabilities.max_symbols_per_request

    def describe_requests(self, groups: Sequence[Sequence[Chunk]]) -> str | None:
        """A line for the plan when this provider asks for `groups` (group_chunks) other than as its capabilities
        say; None when there is nothing to say."""
        return None

    @property
    def adjustment(self) -> Adjustment:
        """Whether the bars this provider returns are adjusted or raw, as configured."""
        return Adjustment.RAW

    @property
    def stored_as(self) -> str:
        """The provider key its bars and ledger rows are stored under: its name, or `csv:<source>`."""
        return self.name

    def fetch(self, request: FetchRequest) -> FetchResult:
        """The request's bars, or raise ProviderError (providers/errors.py): transient when a retry may help."""
        raise NotImplementedError

    def now(self) -> pd.Timestamp:
        """The moment the provider answers as of (UTC): which bars had closed is decided by it (the synthetic
        provider has a clock of its own)."""
        return pd.Timestamp.now(tz="UTC")

    def check_keys(self) -> None:
        """A provider that needs keys has them in the environment (or its options), or a Prefect Secret block is
        named for them (the flow checks that block before it fetches: it is Prefect's to look up); else raise
        BadInputError naming the variables, before anything runs."""
        missing = self.settings.missing_keys()
        if not missing:
            return
        block = self.settings.key_block()
        if block is not None and block.name:
            return
        where = f", or name a Prefect Secret block holding it in {block.variable}" if block is not None else ""
        raise BadInputError(f"provider {self.name} has no key: set {missing}{where}; nothing was fetched")

    def check_inputs(self, symbols: Sequence[str], timeframes: Sequence[Timeframe]) -> None:
        """Raise BadInputError naming the option or symbol and the fix, before a run starts, when an option depends
        on the machine (a directory, a file per symbol); never fetches bars."""

    def source_versions(self, timeframe: Timeframe, dates: list[dt.date]) -> dict[dt.date, str | None]:
        """Each date's source version, None when it is not published (yet): `versioned_sources` providers."""
        raise NotImplementedError(f"{self.name} has no versioned sources")

    def list_symbols(self, query: ReferenceQuery, pace: Callable[[int], None] | None = None) -> list[str]:
        """The tickers its reference data holds for `query`, as the vendor writes them, sorted: `lists_symbols`
        providers. `pace(n)` is called before each further request (a page) after the first."""
        raise BadInputError(
            f"provider {self.name} cannot list its symbols: refresh the universe from one that can "
            f"({', '.join(listing_providers())}), or save a file of tickers as one (candleflow universe save)"
        )

    def probe(self) -> str:
        """One cheap request that needs the provider's key (a reference lookup, a metadata call, a bucket listing),
        for `candleflow doctor`: what it reached, or raise ProviderError (a refused key is terminal)."""
        return "no key needed: nothing to ask"

    def delistings(self, symbols: Sequence[str], pace: Callable[[int], None] | None = None) -> dict[str, dt.date]:
        """Of `symbols`, those the vendor's reference data lists as delisted, with their delisting date (the others
        are listed, or unknown to it): `tells_delistings` providers. `pace(n)` before each request after the first."""
        raise NotImplementedError(f"{self.name} cannot tell which symbols it stopped listing")

    def estimate_cost(self, requests: list[FetchRequest]) -> float:
        """The vendor's price in US dollars for all `requests`: `charges` providers."""
        raise NotImplementedError(f"{self.name} does not charge")


def check_every_symbol(provider: Provider[Any], timeframes: Sequence[Timeframe]) -> None:
    """`--symbols ALL` asks for every ticker of each session: refuse a provider (or a timeframe) that cannot
    answer that in one request, naming those that can."""
    served = provider.capabilities.every_symbol
    refused = [tf.name for tf in timeframes if tf.name not in served]
    if not refused:
        return

    def at(timeframes: tuple[str, ...]) -> str:
        return "every timeframe" if len(timeframes) == 5 else ", ".join(timeframes)

    able = ", ".join(
        f"{name} ({at(cls.capabilities.every_symbol)})"
        for name, cls in sorted(_providers().items())
        if cls.capabilities.every_symbol
    )
    only = f" (only at {', '.join(served)})" if served else ""
    raise BadInputError(
        f"--symbols ALL: provider {provider.name} cannot fetch every ticker of a session in one request at "
        f"{', '.join(refused)}{only}; name the tickers, @FILE or universe:NAME (universe refresh), or use {able}"
    )


def _providers() -> dict[str, type[Provider[Any]]]:
    from providers import PROVIDERS

    return dict(PROVIDERS)


def listing_providers() -> list[str]:
    """The names of the providers that list their symbols."""
    from providers import PROVIDERS

    return sorted(name for name, cls in PROVIDERS.items() if cls.capabilities.lists_symbols)
