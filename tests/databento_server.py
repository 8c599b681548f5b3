"""A local https stand-in for Databento's historical gateway on 127.0.0.1, for the real `databento` client.

Speaks POST /v0/timeseries.get_range (zstd DBN, encoded with databento_dbn), POST /v0/metadata.get_cost
(a JSON number), GET /v0/metadata.list_datasets (the dataset codes) and POST /v0/symbology.resolve (the vendor's
JSON: parent -> instrument_id and instrument_id -> raw_symbol over the parents given, e.g. ES.FUT -> ESH4, ESM4),
with HTTP Basic auth as the client sends it.
The certificate is made per run by `trustme` for 127.0.0.1; tests point the client at the test CA through
REQUESTS_CA_BUNDLE.

Answers: a request for exactly one recorded fixture's dataset, schema and symbol gets that recorded DBN file,
byte for byte. Otherwise bars come from the synthetic provider (instrument ids 1000+), and symbols outside
`known` are reported as `not_found` with the vendor's warning header, or with a 422 when none resolves (that
error body is a reconstruction of the vendor's). The price list is this stand-in's own, not the vendor's.
"""

from __future__ import annotations

import base64
import json
import ssl
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qs

import databento
import databento_dbn as dbn
import pandas as pd
import zstandard

from tests.conftest import FIXTURES
from tests.polygon_server import serving
from tests.providers_support import synthetic_bars

KEY = "db-test-key-0c4d9a71e2b8f3a5d6e7f8a9b"
RECORDED_DIR = FIXTURES / "databento-python" / "tests" / "data"
USD_PER_SYMBOL_DAY = {"ohlcv-1m": 0.25, "ohlcv-1h": 0.05, "ohlcv-1d": 0.01}
_TIMEFRAMES = {"ohlcv-1m": "1m", "ohlcv-1h": "1h", "ohlcv-1d": "1d"}
_RTYPES = {"ohlcv-1m": dbn.RType.OHLCV_1M, "ohlcv-1h": dbn.RType.OHLCV_1H, "ohlcv-1d": dbn.RType.OHLCV_1D}


def recorded_files() -> dict[tuple[str, str, str], Path]:
    """(dataset, schema, symbol) -> the recorded DBN file holding it."""
    found = {}
    for path in sorted(RECORDED_DIR.glob("*/test_data.ohlcv-1[mhd].dbn.zst")):
        metadata = databento.DBNStore.from_file(path).metadata
        for symbol in metadata.symbols:
            found[(metadata.dataset, str(metadata.schema), symbol)] = path
    return found


def encode(
    dataset: str,
    schema: str,
    stype_in: str,
    symbols: list[str],
    known: set[str],
    start: pd.Timestamp,
    end: pd.Timestamp,
) -> bytes:
    """Synthetic bars for the known `symbols` in [start, end) as a zstd DBN stream, like the gateway's. For
    `ALL_SYMBOLS` every known symbol answers, each mapped by its own raw symbol, as the gateway maps them."""
    every = symbols == ["ALL_SYMBOLS"]
    resolved = sorted(known) if every else [s for s in symbols if s in known]
    mappings = [
        SimpleNamespace(
            raw_symbol=s,
            intervals=[SimpleNamespace(start_date=start.date(), end_date=end.date(), symbol=str(1000 + i))],
        )
        for i, s in enumerate(resolved)
    ]
    meta = dbn.Metadata(
        dataset,
        start.value,
        dbn.SType(stype_in),
        dbn.SType.INSTRUMENT_ID,
        dbn.Schema(schema),
        symbols=symbols,
        partial=[],
        not_found=[] if every else [s for s in symbols if s not in known],
        mappings=mappings,
        end=end.value,
    )
    records = []
    for i, symbol in enumerate(resolved):
        bars = synthetic_bars(symbol, _TIMEFRAMES[schema], start, end)
        for row in bars.itertuples():
            records.append(
                (
                    row.ts.value,
                    bytes(
                        dbn.OHLCVMsg(
                            _RTYPES[schema],
                            2,
                            1000 + i,
                            row.ts.value,
                            round(row.open * 1e9),
                            round(row.high * 1e9),
                            round(row.low * 1e9),
                            round(row.close * 1e9),
                            int(row.volume),
                        )
                    ),
                )
            )
    records.sort(key=lambda r: r[0])  # the gateway merges symbols in time order
    return zstandard.ZstdCompressor().compress(bytes(meta.encode()) + b"".join(r for _, r in records))


class DatabentoStandIn(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self,
        known: set[str],
        ca_bundle: Path,
        context: ssl.SSLContext,
        parents: dict[str, list[str]] | None = None,
    ) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.parents = parents or {}  # a futures product's contracts, e.g. {"ES.FUT": ["ESH4", "ESM4"]}
        contracts = sorted({c for members in self.parents.values() for c in members})
        self.instrument_ids = {c: str(5000 + i) for i, c in enumerate(contracts)}
        self.socket = context.wrap_socket(self.socket, server_side=True)
        self.known = known
        self.ca_bundle = ca_bundle
        self.recorded = recorded_files()
        self.scripted: deque[tuple[int, dict[str, str]]] = deque()  # the next answers, whatever the endpoint
        self.scripted_for: dict[str, deque[tuple[int, dict[str, str]]]] = {}  # the next answers of one endpoint
        self.requests: list[dict[str, Any]] = []

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.server_address[1]}"

    def paths(self, endpoint: str) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["path"].endswith(endpoint)]


def _utc(value: str) -> pd.Timestamp:
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _days(start: pd.Timestamp, end: pd.Timestamp) -> int:
    return max(1, (end.normalize() - start.normalize()).days + (1 if end != end.normalize() else 0))


class _Handler(BaseHTTPRequestHandler):
    server: DatabentoStandIn

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _send(self, status: int, body: bytes | object, headers: dict[str, str] | None = None) -> None:
        payload = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        kind = "application/octet-stream" if isinstance(body, bytes) else "application/json"
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(payload)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    def do_GET(self) -> None:
        """GET /v0/metadata.list_datasets: the dataset codes the key may use (those of the recorded files, and the
        equities dataset the generated answers are of)."""
        srv = self.server
        srv.requests.append({"path": self.path, "authorization": self.headers.get("Authorization", "")})
        expected = "Basic " + base64.b64encode(f"{KEY}:".encode()).decode()
        if self.headers.get("Authorization") != expected:
            self._send(401, {"detail": "Authentication failed."})
            return
        if self.path.split("?", 1)[0] != "/v0/metadata.list_datasets":
            self._send(404, {"detail": "Not found"})
            return
        self._send(200, sorted({dataset for dataset, _, _ in srv.recorded} | {"XNAS.ITCH"}))

    def do_POST(self) -> None:
        srv = self.server
        length = int(self.headers.get("Content-Length", "0"))
        form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
        auth = self.headers.get("Authorization", "")
        srv.requests.append({"path": self.path, "form": form, "authorization": auth, "at": time.monotonic()})
        queue = srv.scripted_for.get(self.path.rsplit("/", 1)[-1]) or srv.scripted
        if queue:
            status, headers = queue.popleft()
            srv.requests[-1]["scripted"] = status
            self._send(status, {"detail": f"scripted {status}"}, headers)
            return
        expected = "Basic " + base64.b64encode(f"{KEY}:".encode()).decode()
        if self.headers.get("Authorization") != expected:
            self._send(401, {"detail": "Authentication failed."})
            return
        if self.path == "/v0/symbology.resolve":
            self._send(200, _resolved(srv, form))
            return
        start, end = _utc(form["start"]), _utc(form["end"])
        symbols = form["symbols"].split(",")
        schema = form["schema"]
        every = symbols == ["ALL_SYMBOLS"]
        if self.path == "/v0/metadata.get_cost":
            priced = len(srv.known) if every else len(symbols)
            self._send(200, round(priced * _days(start, end) * USD_PER_SYMBOL_DAY[schema], 6))
            return
        if self.path != "/v0/timeseries.get_range":
            self._send(404, {"detail": "Not found"})
            return
        recorded = srv.recorded.get((form["dataset"], schema, symbols[0]))
        if recorded is not None and len(symbols) == 1:
            self._send(200, recorded.read_bytes())
            return
        missing = [] if every else [s for s in symbols if s not in srv.known]
        if len(missing) == len(symbols):
            detail = {
                "case": "symbology_invalid_request",
                "message": f"None of the symbols could be resolved: {missing}",
                "docs": None,
            }
            self._send(422, {"detail": detail})
            return
        headers = {}
        if missing:
            warning = f"SymbologyWarning: The following symbols could not be resolved: {missing!r}"
            headers["X-Warning"] = json.dumps([warning])
        body = encode(form["dataset"], schema, form["stype_in"], symbols, srv.known, start, end)
        self._send(200, body, headers)


def _resolved(srv: DatabentoStandIn, form: dict[str, str]) -> dict[str, Any]:
    """symbology.resolve's answer, in the vendor's shape, for the two combinations a listing uses."""
    symbols = form["symbols"].split(",")
    by_id = {i: c for c, i in srv.instrument_ids.items()}
    if (form["stype_in"], form["stype_out"]) == ("parent", "instrument_id"):
        out = {p: [srv.instrument_ids[c] for c in srv.parents[p]] for p in symbols if p in srv.parents}
    elif (form["stype_in"], form["stype_out"]) == ("instrument_id", "raw_symbol"):
        out = {i: [by_id[i]] for i in symbols if i in by_id}
    else:
        out = {}
    interval = {"d0": form["start_date"], "d1": form.get("end_date") or form["start_date"]}
    not_found = [s for s in symbols if s not in out]
    return {
        "result": {s: [{**interval, "s": v} for v in values] for s, values in out.items()},
        "symbols": symbols,
        "stype_in": form["stype_in"],
        "stype_out": form["stype_out"],
        "start_date": form["start_date"],
        "end_date": form.get("end_date"),
        "partial": [],
        "not_found": not_found,
        "message": "Not found" if not_found else "OK",
        "status": 2 if not_found else 0,
    }


@contextmanager
def databento_stand_in(
    known: set[str], tmp_dir: Path, parents: dict[str, list[str]] | None = None
) -> Iterator[DatabentoStandIn]:
    import trustme

    ca = trustme.CA()
    ca_bundle = tmp_dir / "databento-test-ca.pem"
    ca.cert_pem.write_to_path(str(ca_bundle))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    with serving(DatabentoStandIn(known, ca_bundle, context, parents)) as server:
        yield server
