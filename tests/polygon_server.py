"""A local stand-in for the Polygon/Massive aggregates API on 127.0.0.1, for the real `massive` client.

Speaks /v2/aggs/ticker/{T}/range/{m}/{span}/{from}/{to} (pages of `page_size` results linked by `next_url`),
/v2/aggs/grouped/locale/us/market/stocks/{date} (every known ticker's bar of that session, `T` the ticker and
`t` the session's close in New York, as the vendor sends it), /v3/reference/tickers/{T}, and the tickers reference
/v3/reference/tickers (filtered by market, type, exchange and active, paged by an opaque `next_url` cursor, in the
shape of the vendor's recorded answer). Bars come from the synthetic provider in the vendor's wire format (daily `t`
at midnight New York). AAPL daily 2005-04-01..2005-04-04 is the recorded vendor response, byte for byte, and so is
the grouped answer for 2020-10-14, the session of the one bar the recorded grouped response holds (GIK). Tests
script failures by queueing (status, headers) answers and read the requests it saw.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import random
import socket
import struct
import threading
import time
from collections import Counter, deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlparse

import pandas as pd

from candleflow.timeframes import get_timeframe
from providers import get_provider
from providers.base import FetchRequest
from tests.conftest import FIXTURES

S = TypeVar("S", bound=ThreadingHTTPServer)
KEY = "test-key-5f3a"
RECORDED = FIXTURES / "massive-client-python/test_rest/mocks/v2/aggs/ticker/AAPL/range/1/day/2005-04-01/2005-04-04.json"
RECORDED_GROUPED = FIXTURES / (
    "massive-client-python/test_rest/mocks/v2/aggs/grouped/locale/us/market/stocks/2005-04-04&adjusted=true.json"
)
RECORDED_GROUPED_SESSION = "2020-10-14"  # the date of its one bar (`t` 1602705600000: 16:00 New York that day)
_SPANS = {
    ("1", "minute"): "1m",
    ("5", "minute"): "5m",
    ("15", "minute"): "15m",
    ("1", "hour"): "1h",
    ("1", "day"): "1d",
}


FAULTS = ("429", "429 with Retry-After", "500", "503", "slower than the timeout", "connection reset", "truncated body")


@dataclass
class Chaos:
    """Faults at a fixed seeded rate on aggregate requests: each faulty answer is the next of FAULTS in turn.

    A series (one ticker and range, all its pages) fails at most `max_in_a_row` times before one attempt of it
    gets through whole, page after page: counted per page, a paged series could fail at a new page on every
    attempt and run out of any number of retries (it did, in a CI run)."""

    rate: float
    seed: int = 7
    slow_seconds: float = 1.5
    max_in_a_row: int = 2
    seen: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self._random = random.Random(self.seed)
        self._next = 0
        self._lock = threading.Lock()
        self._in_a_row: Counter[str] = Counter()

    def draw(self, series: str) -> str | None:
        with self._lock:
            unlucky = self._random.random() < self.rate
            if not unlucky or self._in_a_row[series] >= self.max_in_a_row:
                return None
            self._in_a_row[series] += 1
            fault = FAULTS[self._next % len(FAULTS)]
            self._next += 1
            self.seen[fault] += 1
            return fault

    def completed(self, series: str) -> None:
        """The series' last page went out: its next attempt may meet faults again."""
        with self._lock:
            self._in_a_row[series] = 0


class PolygonStandIn(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, known: set[str], page_size: int = 1000) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.known = known
        self.page_size = page_size
        self.scripted: deque[tuple[int, dict[str, str]]] = deque()
        self.delay_seconds = 0.0
        self.requests: list[dict[str, str]] = []
        self.chaos: Chaos | None = None
        # the tickers reference (/v3/reference/tickers): records shaped as the vendor's; by default every known
        # ticker as an active common stock on XNAS
        self.reference: list[dict[str, object]] = [reference_record(t) for t in sorted(known)]
        # the options contracts reference (/v3/reference/options/contracts): records shaped as the vendor's, each
        # with `expired` (this stand-in's own field, to answer the `expired` filter; left out of the answers)
        self.options_reference: list[dict[str, object]] = []
        # A whole market for grouped daily: that many tickers' day bars per session, as the generated day files
        # hold them (tests/market_files.py), instead of the known tickers' synthetic bars (0: off).
        self.market_tickers = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


def _wire(symbol: str, tf: str, start: str, end: str) -> list[dict[str, float | int]]:
    timeframe = get_timeframe(tf)
    if timeframe.intraday:
        lo, hi = pd.Timestamp(int(start), unit="ms", tz="UTC"), pd.Timestamp(int(end) + 1, unit="ms", tz="UTC")
    else:
        lo = pd.Timestamp(start, tz="UTC")
        hi = pd.Timestamp(end, tz="UTC") + pd.Timedelta(days=1)
    bars = get_provider("synthetic").fetch(FetchRequest((symbol,), timeframe, lo, hi)).bars
    ts = bars["ts"]
    if not timeframe.intraday:  # the vendor stamps daily bars at midnight New York
        ts = ts.dt.tz_localize(None).dt.tz_localize("America/New_York").dt.tz_convert("UTC")
    return [
        {"v": v, "vw": vw, "o": o, "c": c, "h": h, "l": lo_, "t": int(t.value // 1_000_000), "n": int(n)}
        for v, vw, o, c, h, lo_, t, n in zip(
            bars["volume"],
            bars["vwap"],
            bars["open"],
            bars["close"],
            bars["high"],
            bars["low"],
            ts,
            bars["trades"],
            strict=True,
        )
    ]


class _Handler(BaseHTTPRequestHandler):
    server: PolygonStandIn

    def log_message(self, *_: object) -> None:  # quiet
        pass

    def _send(self, status: int, body: object, headers: dict[str, str] | None = None) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Request-Id", f"req-{len(self.server.requests)}")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _misbehave(self, fault: str, chaos: Chaos | None) -> bool:
        """Answer with `fault`; False when the fault is a delay after which the normal answer follows."""
        if fault.startswith("429"):
            headers = {"Retry-After": "0.2"} if "Retry-After" in fault else {}
            self._send(429, {"status": "ERROR", "error": "too many requests"}, headers)
        elif fault in ("500", "503"):
            self._send(int(fault), {"status": "ERROR", "error": "server error"})
        elif fault == "slower than the timeout":
            time.sleep(chaos.slow_seconds if chaos else 1.5)
            return False
        elif fault == "connection reset":  # RST instead of an answer
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
            self.close_connection = True
        else:  # truncated body: the promised length, half of it sent, then the connection closes
            data = json.dumps({"status": "OK", "results": [{"o": 1.0}] * 50}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
        return True

    def do_GET(self) -> None:
        srv = self.server
        srv.requests.append({"path": self.path, "authorization": self.headers.get("Authorization", "")})
        if srv.delay_seconds:
            time.sleep(srv.delay_seconds)
        if srv.scripted:
            status, headers = srv.scripted.popleft()
            self._send(status, {"status": "ERROR", "error": f"scripted {status}"}, headers)
            return
        if self.headers.get("Authorization") != f"Bearer {KEY}":
            self._send(401, {"status": "NOT_AUTHORIZED", "message": "Unknown API Key"})
            return
        url = urlparse(self.path)
        parts = url.path.strip("/").split("/")
        if parts == ["v3", "reference", "tickers"]:
            self._reference(parse_qs(url.query))
            return
        if parts == ["v3", "reference", "options", "contracts"]:
            self._options_reference(parse_qs(url.query))
            return
        if parts[:3] == ["v3", "reference", "tickers"] and len(parts) == 4:
            if parts[3] in srv.known:
                self._send(200, {"status": "OK", "results": {"ticker": parts[3], "active": True}})
            else:
                self._send(404, {"status": "NOT_FOUND", "message": "Ticker not found."})
            return
        if parts[:7] == ["v2", "aggs", "grouped", "locale", "us", "market", "stocks"] and len(parts) == 8:
            self._grouped(parts[7])
            return
        if parts[:3] != ["v2", "aggs", "ticker"] or len(parts) != 9:
            self._send(404, {"status": "NOT_FOUND"})
            return
        symbol, multiplier, span, start, end = parts[3], parts[5], parts[6], parts[7], parts[8]
        chaos = srv.chaos
        fault = chaos.draw(url.path) if chaos is not None else None
        if fault is not None and self._misbehave(fault, chaos):
            return
        if (symbol, span, start, end) == ("AAPL", "day", "2005-04-01", "2005-04-04"):
            self._send(200, RECORDED.read_bytes())
            return
        results = _wire(symbol, _SPANS[(multiplier, span)], start, end) if symbol in srv.known else []
        cursor = int(parse_qs(url.query).get("cursor", ["0"])[0])
        page = results[cursor : cursor + srv.page_size]
        body: dict[str, object] = {"ticker": symbol, "status": "OK", "resultsCount": len(page), "adjusted": True}
        if page:
            body["results"] = page
        if cursor + srv.page_size < len(results):
            body["next_url"] = f"{srv.url}{url.path}?cursor={cursor + srv.page_size}"
        elif chaos is not None and fault is None:  # (after a slow answer the client has given up already)
            chaos.completed(url.path)
        self._send(200, body)

    def _reference(self, query: dict[str, list[str]]) -> None:
        """The tickers reference, filtered by market, type, exchange, active and ticker (`_paged`)."""
        arg = _cursor_args(query)
        active = arg.get("active", "true") == "true"
        records = [
            r
            for r in self.server.reference
            if r["market"] == arg.get("market", r["market"])
            and r["type"] == arg.get("type", r["type"])
            and r["primary_exchange"] == arg.get("exchange", r["primary_exchange"])
            and r["active"] is active
            and r["ticker"] == arg.get("ticker", r["ticker"])
        ]
        body = self._paged(records, arg, "/v3/reference/tickers", default_limit=100)
        self._send(200, {**body, "request_id": "ref", "count": len(body["results"])})

    def _options_reference(self, query: dict[str, list[str]]) -> None:
        """The options contracts reference, filtered by `underlying_ticker` and `expired` (default false, as the
        vendor's; `expired` is this stand-in's own field and is left out of the answers)."""
        arg = _cursor_args(query)
        expired = arg.get("expired", "false") == "true"
        records = [
            {k: v for k, v in r.items() if k != "expired"}
            for r in self.server.options_reference
            if r["underlying_ticker"] == arg.get("underlying_ticker", r["underlying_ticker"])
            and r["expired"] is expired
        ]
        body = self._paged(records, arg, "/v3/reference/options/contracts", default_limit=10)
        self._send(200, {**body, "request_id": "opt"})

    def _paged(
        self, records: list[dict[str, object]], arg: dict[str, str], path: str, *, default_limit: int
    ) -> dict[str, Any]:
        """The vendor's paging of a reference: `limit` records a page (at most 1000) sorted by ticker, and a
        `next_url` whose opaque cursor carries the filters and where the page ended (the client sends nothing else
        with it)."""
        limit = min(int(arg.get("limit", str(default_limit))), 1000)
        after = arg.get("after", "")
        remaining = [r for r in sorted(records, key=lambda r: str(r["ticker"])) if str(r["ticker"]) > after]
        page = remaining[:limit]
        body: dict[str, Any] = {"results": page, "status": "OK"}
        if len(remaining) > limit:
            cursor = {**{k: [v] for k, v in arg.items()}, "after": [str(page[-1]["ticker"])]}
            token = base64.urlsafe_b64encode(json.dumps(cursor).encode()).decode().rstrip("=")
            body["next_url"] = f"{self.server.url}{path}?cursor={token}"
        return body

    def _grouped(self, day: str) -> None:
        if day == RECORDED_GROUPED_SESSION:
            self._send(200, RECORDED_GROUPED.read_bytes())
            return
        close = pd.Timestamp(f"{day} 16:00", tz="America/New_York").tz_convert("UTC")
        results = []
        if self.server.market_tickers:
            results = _market_results(dt.date.fromisoformat(day), self.server.market_tickers, close)
        for symbol in sorted(self.server.known) if not results else ():
            for bar in _wire(symbol, "1d", day, day):
                results.append({"T": symbol, **bar, "t": int(close.value // 1_000_000)})
        body = {"queryCount": len(results), "resultsCount": len(results), "adjusted": True, "status": "OK"}
        self._send(
            200, {**body, "request_id": f"req-{len(self.server.requests)}", "count": len(results), "results": results}
        )


def _market_results(day: dt.date, tickers: int, close: pd.Timestamp) -> list[dict[str, object]]:
    """A grouped daily answer's results for a whole market: the generated day file's bars, in the vendor's keys."""
    from tests.market_files import day_table

    frame = day_table(day, tickers=tickers).to_pandas()
    renamed = pd.DataFrame(
        {
            "T": frame["ticker"],
            "v": frame["volume"],
            "vw": ((frame["high"] + frame["low"] + frame["close"]) / 3).round(4),
            "o": frame["open"],
            "c": frame["close"],
            "h": frame["high"],
            "l": frame["low"],
            "t": int(close.value // 1_000_000),
            "n": frame["transactions"],
        }
    )
    return list(renamed.to_dict("records"))


def reference_record(ticker: str, **fields: object) -> dict[str, object]:
    """One record of the vendor's tickers reference, with the fields its recorded answer has."""
    record: dict[str, object] = {
        "ticker": ticker,
        "name": f"{ticker} Inc.",
        "market": "stocks",
        "locale": "us",
        "primary_exchange": "XNAS",
        "type": "CS",
        "active": True,
        "currency_name": "usd",
        "cik": "0001090872",
        "composite_figi": "BBG000C2V3D6",
        "share_class_figi": "BBG001SCTQY4",
        "last_updated_utc": "2026-12-04T00:00:00Z",
    }
    return {**record, **fields}


def _cursor_args(query: dict[str, list[str]]) -> dict[str, str]:
    """A reference request's filters: from its query, or from the opaque cursor of a `next_url` it follows."""
    if "cursor" in query:
        query = json.loads(base64.urlsafe_b64decode(query["cursor"][0] + "==").decode())
    return {k: v[0] for k, v in query.items()}


def option_record(
    underlying: str, expiration: str, kind: str, strike: float, *, expired: bool = False
) -> dict[str, object]:
    """One record of the vendor's options contracts reference: its OCC ticker (O:, root, yymmdd, C or P, the
    strike in thousandths over 8 digits) and the fields the vendor's client reads."""
    day = pd.Timestamp(expiration)
    ticker = f"O:{underlying}{day:%y%m%d}{kind[0].upper()}{round(strike * 1000):08d}"
    return {
        "ticker": ticker,
        "underlying_ticker": underlying,
        "contract_type": kind,
        "exercise_style": "american",
        "expiration_date": expiration,
        "strike_price": strike,
        "shares_per_contract": 100,
        "primary_exchange": "BATO",
        "cfi": "OCASPS",
        "expired": expired,
    }


@contextmanager
def serving(server: S) -> Iterator[S]:
    """Run a stand-in server on a thread for the block, then shut it down and free its port."""
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def polygon_stand_in(known: set[str], page_size: int = 1000) -> Iterator[PolygonStandIn]:
    with serving(PolygonStandIn(known, page_size)) as server:
        yield server
