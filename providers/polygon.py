"""`polygon`: aggregate bars from the Polygon/Massive REST API through the vendor's own `massive` client.

- Settings (`PolygonSettings`): each option, else $CANDLEFLOW_POLYGON_<OPTION> (base_url: default the client's).
  Key: $MASSIVE_API_KEY, else $POLYGON_API_KEY, else a Secret block named in $CANDLEFLOW_POLYGON_API_KEY_BLOCK.
- Every page is followed (`next_url`, by the client), `limit=50000`; `adjusted` is an explicit option
  (default true, as the vendor's).
- Daily bars are stamped by the vendor at midnight New York (05:00Z or 04:00Z by DST): they become session-dated
  bars at 00:00 UTC. Intraday `t` is the bar's open in UTC. Minute aggregates include extended hours.
- Retries are Prefect's: the client's urllib3 retries are replaced by `_ClassifyingRetry`, which never retries
  and turns the HTTP status into an error class: 429, 5xx and connection trouble are transient (Retry-After is
  kept on the error), 401/403 terminal naming the key variable, other 4xx terminal.
- Grouped daily: daily bars of many symbols over few sessions come from /v2/aggs/grouped (one request per session
  answers every ticker) instead of one request per symbol, when the symbols number at least
  `grouped_daily_min_symbols` (default 50) and more than the window's sessions (fewer requests either way); the
  plan groups such chunks into one request (`symbols_per_request`). Its `t` is the session's close in New York.
  Every HTTP request past a fetch's first takes its own slot of the rate limit (`FetchRequest.take`).
- A window with sessions but no bars asks /v3/reference/tickers/{T}: a 404 there means an unknown ticker (terminal);
  otherwise the window is simply empty (not yet listed, halted, delisted).
- The key is sent in the Authorization header only and never appears in messages.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

import pandas as pd
import urllib3
from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import SettingsConfigDict
from urllib3.util.retry import Retry

from candleflow.inputs import VENDOR_CASE
from candleflow.model import Adjustment, Chunk
from candleflow.sessions import schedule
from candleflow.universes import ReferenceQuery
from providers.base import Capabilities, FetchRequest, FetchResult, Provider
from providers.errors import TerminalProviderError, connection_error, http_error
from providers.frames import canonical_frame, session_dated
from providers.settings import ApiKeySettings


def _sessions(start: pd.Timestamp, end: pd.Timestamp) -> list[dt.date]:
    """The US stock market's sessions in the half-open window [start, end)."""
    last = (end - pd.Timedelta(days=1)).date()
    return [] if last < start.date() else [d.date() for d in schedule(start.date(), last, "XNYS").index]


_REFERENCE_PAGE = 1000  # the tickers reference's largest page
_TIMESPANS = {"1m": (1, "minute"), "5m": (5, "minute"), "15m": (15, "minute"), "1h": (1, "hour"), "1d": (1, "day")}


class PolygonSettings(ApiKeySettings):
    model_config = SettingsConfigDict(env_prefix="CANDLEFLOW_POLYGON_")

    adjusted: bool = True
    base_url: str | None = None  # default the client's
    api_key: SecretStr | None = Field(default=None, validation_alias=AliasChoices("MASSIVE_API_KEY", "POLYGON_API_KEY"))
    timeout_seconds: float = 30.0
    grouped_daily_min_symbols: int = Field(default=50, ge=2)


class _HttpError(Exception):
    """Raised from inside urllib3 by `_ClassifyingRetry`, carrying what the client would drop."""

    def __init__(self, status: int | None, headers: Any, error: Exception | None) -> None:
        super().__init__(f"HTTP {status}" if status else str(error))
        self.status = status
        self.headers = headers or {}
        self.error = error


class _ClassifyingRetry(Retry):
    """A urllib3 Retry that never retries: it raises with the status and headers instead (Prefect retries)."""

    def increment(
        self,
        method: str | None = None,
        url: str | None = None,
        response: Any = None,
        error: Exception | None = None,
        _pool: Any = None,
        _stacktrace: Any = None,
    ) -> NoReturn:
        raise _HttpError(
            response.status if response is not None else None, response.headers if response is not None else None, error
        )


def _retry() -> Retry:
    return _ClassifyingRetry(total=0, status_forcelist=list(range(400, 600)), redirect=0, raise_on_status=True)


class PolygonProvider(Provider[PolygonSettings]):
    name = "polygon"
    settings_class = PolygonSettings
    capabilities = Capabilities(
        requests_per_second=5.0,
        bars_only_when_traded=True,
        session_hours="extended",
        symbol_rule=VENDOR_CASE,
        lists_symbols=True,
        every_symbol=("1d",),  # grouped daily: every ticker of a session in one request
        tells_delistings=True,
    )

    @property
    def adjustment(self) -> Adjustment:
        return Adjustment.ADJUSTED if self.settings.adjusted else Adjustment.RAW

    def _client(self, window: tuple[pd.Timestamp, pd.Timestamp] | None) -> Any:
        from massive import RESTClient

        settings = self.settings
        missing = settings.missing_keys()
        if missing:
            raise TerminalProviderError(f"no API key: set {missing}", provider=self.name, window=window)
        base = settings.base_url
        kwargs: dict[str, Any] = {"base": base.rstrip("/")} if base else {}
        return RESTClient(
            api_key=settings.key(),
            retries=0,
            connect_timeout=settings.timeout_seconds,
            read_timeout=settings.timeout_seconds,
            connection_pool_kw={"retries": _retry()},
            **kwargs,
        )

    def symbols_per_request(self, chunks: Sequence[Chunk]) -> int:
        first = chunks[0]
        return len(chunks) if self._grouped(first.timeframe, len(chunks), first.window_start, first.window_end) else 1

    def describe_requests(self, groups: Sequence[Sequence[Chunk]]) -> str | None:
        every = [g for g in groups if g[0].every]
        if every:
            sessions = sum(len(_sessions(g[0].window_start, g[0].window_end)) for g in every)
            return f"every ticker's daily bars in {sessions} grouped-daily request{'s' if sessions != 1 else ''}"
        grouped = [g for g in groups if len(g) > 1]
        if not grouped:
            return None
        symbols = sum(len(g) for g in grouped)
        sessions = sum(len(_sessions(g[0].window_start, g[0].window_end)) for g in grouped)
        requests = f"{sessions} grouped-daily request{'s' if sessions != 1 else ''}"
        return f"{symbols} symbols' daily bars in {requests} (one per session) instead of one per symbol"

    def _grouped(self, timeframe: str, symbols: int, start: pd.Timestamp, end: pd.Timestamp) -> bool:
        """Whether grouped daily serves these symbols in fewer requests than one per symbol."""
        if timeframe != "1d":
            return False
        if symbols == 0:  # every ticker (`--symbols ALL`): only grouped daily answers that
            return True
        if symbols < self.settings.grouped_daily_min_symbols:
            return False
        return symbols > len(_sessions(start, end))

    def fetch(self, request: FetchRequest) -> FetchResult:
        window = (request.start, request.end)
        client = self._client(window)
        count = 0 if request.every else len(request.symbols)
        if self._grouped(request.timeframe.name, count, request.start, request.end):
            return self._fetch_grouped(client, request)
        multiplier, timespan = _TIMESPANS[request.timeframe.name]
        frames = []
        for i, symbol in enumerate(request.symbols):
            if i:
                request.take()
            if request.timeframe.intraday:  # ms timestamps; the vendor's `to` is inclusive
                start: Any = int(request.start.value // 1_000_000)
                end: Any = int(request.end.value // 1_000_000) - 1
            else:
                start = request.start.date().isoformat()
                end = (request.end - pd.Timedelta(days=1)).date().isoformat()
            rows = self._call(
                lambda s=symbol, a=start, b=end: [
                    agg.__dict__
                    for agg in client.list_aggs(
                        s, multiplier, timespan, a, b, adjusted=self.settings.adjusted, sort="asc", limit=50_000
                    )
                ],
                symbol,
                window,
            )
            frame = pd.DataFrame(
                rows, columns=["open", "high", "low", "close", "volume", "vwap", "timestamp", "transactions", "otc"]
            )
            if frame.empty:
                self._check_ticker(client, symbol, request)
            ts = pd.to_datetime(frame["timestamp"], unit="ms", utc=True)
            if not request.timeframe.intraday:  # midnight New York -> the session date at 00:00 UTC
                ts = session_dated(ts)
            frame = frame.assign(symbol=symbol, ts=ts, trades=frame["transactions"])
            frames.append(frame[(frame["ts"] >= request.start) & (frame["ts"] < request.end)])
        combined = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["symbol", "ts"])
        return FetchResult(canonical_frame(combined, provider=self.name, timeframe=request.timeframe.name))

    def _fetch_grouped(self, client: Any, request: FetchRequest) -> FetchResult:
        """One grouped daily request per session of the window, its tickers kept to the requested ones. A requested
        symbol absent from every session is looked up: unknown to the vendor (404) it is reported so, else empty."""
        window = (request.start, request.end)
        wanted = set() if request.every else set(request.symbols)
        rows: list[dict[str, Any]] = []
        label = "every ticker" if request.every else f"{len(request.symbols)} symbols"
        for i, day in enumerate(_sessions(request.start, request.end)):
            if i:
                request.take()
            answer = self._call(
                lambda d=day: client.get_grouped_daily_aggs(d.isoformat(), adjusted=self.settings.adjusted),
                label,
                window,
            )
            rows += [agg.__dict__ for agg in answer if request.every or agg.ticker in wanted]
        columns = ["ticker", "open", "high", "low", "close", "volume", "vwap", "timestamp", "transactions", "otc"]
        frame = pd.DataFrame(rows, columns=columns)
        ts = session_dated(pd.to_datetime(frame["timestamp"], unit="ms", utc=True))
        frame = frame.assign(symbol=frame["ticker"], ts=ts, trades=frame["transactions"])
        frame = frame[(frame["ts"] >= request.start) & (frame["ts"] < request.end)]
        unknown = []
        for symbol in sorted(wanted - set(frame["symbol"])):
            try:
                self._check_ticker(client, symbol, request)
            except TerminalProviderError as exc:
                if exc.http_status != 404:
                    raise
                unknown.append(symbol)
        bars = canonical_frame(frame, provider=self.name, timeframe=request.timeframe.name)
        return FetchResult(bars, unknown_symbols=tuple(unknown))

    def list_symbols(self, query: ReferenceQuery, pace: Callable[[int], None] | None = None) -> list[str]:
        """The vendor's tickers reference (/v3/reference/tickers) filtered by `query`, or for market options its
        options contracts reference (/v3/reference/options/contracts) of each underlying (contracts not expired;
        with inactive ones, expired contracts too), 1,000 a page, each page after the first paced. A ticker the
        symbol rule cannot take (none seen so far) is left out, not fatal."""
        query.without_parents(self.name)
        client = self._client(None)
        client_pace = pace or (lambda n: None)
        found: dict[str, None] = {}

        def take(records: Any) -> None:
            for i, record in enumerate(records):
                if i and i % _REFERENCE_PAGE == 0:
                    client_pace(1)  # a page after the first came: one slot of the rate, before the next
                if record.ticker and VENDOR_CASE.pattern.fullmatch(record.ticker):
                    found.setdefault(record.ticker)

        def pages() -> None:
            if query.market != "options":
                take(
                    client.list_tickers(
                        market=query.market,
                        type=query.type,
                        exchange=query.exchange,
                        active=query.active,
                        limit=_REFERENCE_PAGE,
                        sort="ticker",
                        order="asc",
                    )
                )
                return
            for n, (underlying, expired) in enumerate(
                (u, e) for u in query.underlyings for e in ((False,) if query.active else (False, True))
            ):
                if n:
                    client_pace(1)  # each further listing's first page
                take(
                    client.list_options_contracts(
                        underlying_ticker=underlying, expired=expired, limit=_REFERENCE_PAGE, sort="ticker", order="asc"
                    )
                )

        self._call(
            pages,
            f"the {'options contracts' if query.market == 'options' else 'tickers'} reference ({query.describe()})",
            None,
        )
        return sorted(found)

    def probe(self) -> str:
        """One page of one record of the tickers reference."""
        client = self._client(None)
        self._call(lambda: next(iter(client.list_tickers(limit=1)), None), "tickers", None)  # the first page only
        return f"the tickers reference answered at {self.settings.base_url or 'the vendor'}"

    def delistings(self, symbols: Sequence[str], pace: Callable[[int], None] | None = None) -> dict[str, dt.date]:
        """The tickers reference asked for each symbol's inactive record (/v3/reference/tickers?ticker=T&active=
        false), one request each, each after the first paced: a record with `delisted_utc` is a delisting."""
        client = self._client(None)
        found: dict[str, dt.date] = {}
        for n, symbol in enumerate(symbols):
            if n and pace is not None:
                pace(1)
            records = self._call(
                lambda s=symbol: list(client.list_tickers(ticker=s, active=False, limit=10)),
                symbol,
                None,
            )
            dates = [
                pd.Timestamp(r.delisted_utc).date()
                for r in records
                if getattr(r, "ticker", None) == symbol and getattr(r, "delisted_utc", None)
            ]
            if dates:
                found[symbol] = max(dates)
        return found

    def _check_ticker(self, client: Any, symbol: str, request: FetchRequest) -> None:
        """Ask the vendor whether it knows `symbol` (one more request, with its own rate slot): a 404 is terminal."""
        window = (request.start, request.end)
        request.take()
        try:
            self._call(lambda: client.get_ticker_details(symbol), symbol, window)
        except TerminalProviderError as exc:
            if exc.http_status == 404:
                raise TerminalProviderError(
                    f"unknown ticker {symbol}: check the symbol",
                    provider=self.name,
                    symbols=[symbol],
                    window=window,
                    http_status=404,
                    request_id=exc.request_id,
                ) from None
            raise

    def _call(self, fn: Any, symbol: str, window: tuple[pd.Timestamp, pd.Timestamp] | None) -> Any:
        """`fn`'s answer, its HTTP errors mapped; `symbol` names what it asked for (a ticker, or `N symbols`)."""
        where = {"provider": self.name, "symbols": [symbol], "window": window}
        try:
            return fn()
        except _HttpError as exc:
            if exc.status is None:
                raise connection_error(exc.error, where) from None
            raise http_error(
                exc.status,
                where,
                request_id=exc.headers.get("X-Request-Id"),
                retry_after=exc.headers.get("Retry-After"),
                refused=f"the API key was refused or lacks this data; check {self.settings.key_variables()}",
                detail=f" for {symbol}",
            ) from None
        except urllib3.exceptions.HTTPError as exc:  # connection refused, timeouts, dropped connections
            raise connection_error(exc, where) from None
