"""`databento`: OHLCV bars from Databento's historical API through the vendor's own `databento` client.

- Key: $DATABENTO_API_KEY (or a Prefect Secret block, see tasks/secrets.py). Dataset: the `dataset` option or
  $CANDLEFLOW_DATABENTO_DATASET (e.g. XNAS.ITCH, GLBX.MDP3, OPRA.PILLAR); required, since every request costs.
  Gateway: $CANDLEFLOW_DATABENTO_GATEWAY (default the client's); the client only speaks https.
- Schemas: 1m, 1h and 1d are the vendor's ohlcv-1m, ohlcv-1h, ohlcv-1d. 5m and 15m are aggregated here from
  ohlcv-1m on the UTC grid (open of the first minute, close of the last, high/low extremes, volume summed).
- `ts` is the bar's open (`ts_event`), UTC; daily bars are stamped 00:00 UTC of their date by the vendor.
  Prices are as traded (`raw`). Databento sends no vwap or trade count for OHLCV schemas.
- A minute without trades has no bar: that is the vendor's convention, not a gap.
- Many venues, one symbol (OPRA has a bar per exchange): (symbol, ts) must stay unique, so by default bars of
  the same instrument and minute are consolidated: high = highest high, low = lowest low, volume = summed, and
  open/close from the venue with the most volume in that bar (the true first and last trade across venues is not
  knowable from per-venue bars; ties go to the lower publisher id). `publisher_id=N` keeps one venue instead.
- Costs: `estimate_cost` asks `metadata.get_cost` for the whole plan before anything is downloaded; the flows
  print the quote on a dry run and refuse a run above `max_cost_usd`.
- Symbols: up to 2,000 per request (the vendor's limit): chunks sharing a window are fetched together.
  `stype_in` picks the symbology (raw_symbol, continuous, instrument_id, ...); `parent` is refused, since it
  maps one symbol to many instruments. Unknown symbols are terminal errors naming them.
- Errors: 429 and 5xx and connection trouble are transient (Retry-After kept); 401/403 terminal naming
  DATABENTO_API_KEY; other 4xx terminal with the vendor's message. The client itself never retries.
"""

from __future__ import annotations

import os
import warnings
from typing import Any, ClassVar

import pandas as pd
from pydantic import BaseModel, ConfigDict, SecretStr, field_validator, model_validator

from candleflow.model import Adjustment
from candleflow.sessions import SessionHours
from candleflow.timeframes import ChunkPeriod
from providers.base import UNKNOWN_SYMBOLS, FetchRequest, aggregate_bars, canonical_frame
from providers.errors import ProviderError, TerminalProviderError, TransientProviderError

KEY_ENV = "DATABENTO_API_KEY"
DATASET_ENV = "CANDLEFLOW_DATABENTO_DATASET"
GATEWAY_ENV = "CANDLEFLOW_DATABENTO_GATEWAY"
_SCHEMAS = {"1m": "ohlcv-1m", "5m": "ohlcv-1m", "15m": "ohlcv-1m", "1h": "ohlcv-1h", "1d": "ohlcv-1d"}
_STYPES = ("raw_symbol", "instrument_id", "continuous", "smart", "isin", "cusip", "figi", "bbg_comp_id")


class DatabentoOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dataset: str | None = None  # else $CANDLEFLOW_DATABENTO_DATASET
    stype_in: str = "raw_symbol"
    gateway: str | None = None  # else $CANDLEFLOW_DATABENTO_GATEWAY, else the client's
    api_key: SecretStr | None = None  # else $DATABENTO_API_KEY
    publisher_id: int | None = None  # keep one venue's bars; default: consolidate venues (see the module doc)

    @field_validator("stype_in")
    @classmethod
    def _one_instrument_per_symbol(cls, value: str) -> str:
        if value not in _STYPES:
            raise ValueError(f"{value!r} is not supported: use one of {', '.join(_STYPES)}")
        return value

    @model_validator(mode="after")
    def _dataset_is_known(self) -> DatabentoOptions:
        self.dataset = self.dataset or os.environ.get(DATASET_ENV) or None
        if not self.dataset:
            raise ValueError(f"no dataset: set {DATASET_ENV} or --option dataset=XNAS.ITCH (every request costs)")
        return self


def api_key() -> str | None:
    return os.environ.get(KEY_ENV) or None


class DatabentoProvider:
    name: ClassVar[str] = "databento"
    requests_per_second: ClassVar[float] = 20.0
    max_symbols_per_request: ClassVar[int] = 2000
    chunk_period: ClassVar[ChunkPeriod | None] = None
    knows_symbols: ClassVar[bool] = True
    session_hours: ClassVar[SessionHours] = "extended"
    bars_only_when_traded: ClassVar[bool] = True

    def __init__(self, options: DatabentoOptions | None = None, **overrides: object) -> None:
        self.options = options or DatabentoOptions.model_validate(overrides)

    @property
    def adjustment(self) -> Adjustment:
        return Adjustment.RAW

    def missing_keys(self) -> str | None:
        return None if self.options.api_key or api_key() else KEY_ENV

    def _client(self, request: FetchRequest | None = None) -> Any:
        import databento

        key = self.options.api_key.get_secret_value() if self.options.api_key else api_key()
        if not key:
            raise TerminalProviderError(f"no API key: set {KEY_ENV}", **self._where(request))
        gateway = self.options.gateway or os.environ.get(GATEWAY_ENV)
        return databento.Historical(key=key, **({"gateway": gateway} if gateway else {}))

    def _where(self, request: FetchRequest | None) -> dict[str, Any]:
        if request is None:
            return {"provider": self.name}
        return {"provider": self.name, "symbols": request.symbols, "window": (request.start, request.end)}

    def _query(self, request: FetchRequest) -> dict[str, Any]:
        return {
            "dataset": self.options.dataset,
            "start": request.start,
            "end": request.end,
            "symbols": list(request.symbols),
            "schema": _SCHEMAS[request.timeframe.name],
            "stype_in": self.options.stype_in,
        }

    def estimate_cost(self, requests: list[FetchRequest]) -> float:
        """The vendor's quote in US dollars for `requests`, from `metadata.get_cost` (nothing is downloaded)."""
        if not requests:
            return 0.0
        client = self._client(requests[0])
        return float(sum(self._call(lambda r=r: client.metadata.get_cost(**self._query(r)), r) for r in requests))

    def fetch(self, request: FetchRequest) -> pd.DataFrame:
        client = self._client(request)
        with warnings.catch_warnings(record=True) as caught:  # the vendor reports unresolved symbols as warnings
            warnings.simplefilter("always")
            store = self._call(lambda: client.timeseries.get_range(**self._query(request)), request)
            raw = store.to_df().reset_index()
        unknown = sorted(set(store.metadata.not_found) & set(request.symbols))
        if not unknown:
            unknown = [s for s in request.symbols if any(f"'{s}'" in str(w.message) for w in caught)]
        if unknown and len(unknown) == len(request.symbols):
            raise TerminalProviderError(
                f"unknown symbol(s) {', '.join(unknown)} in {self.options.dataset} ({self.options.stype_in}): "
                "check the symbols, the dataset and stype_in",
                **self._where(request),
            )
        frame = self._bars(raw, request)
        if unknown:
            frame.attrs[UNKNOWN_SYMBOLS] = unknown
        return frame

    def _bars(self, raw: pd.DataFrame, request: FetchRequest) -> pd.DataFrame:
        tf = request.timeframe
        if raw.empty:
            return canonical_frame(pd.DataFrame({"symbol": [], "ts": []}), provider=self.name, timeframe=tf.name)
        raw = raw.rename(columns={"ts_event": "ts"})
        if self.options.publisher_id is not None:
            raw = raw[raw["publisher_id"] == self.options.publisher_id]
        bars = consolidate_venues(raw[raw["symbol"].isin(request.symbols)])
        if tf.intraday and tf.step > pd.Timedelta(minutes=1):
            bars = aggregate_bars(bars, tf.step)
        bars = bars[(bars["ts"] >= request.start) & (bars["ts"] < request.end)]
        return canonical_frame(bars, provider=self.name, timeframe=tf.name)

    def _call(self, fn: Any, request: FetchRequest) -> Any:
        import requests
        from databento.common.error import BentoError, BentoHttpError

        where = self._where(request)
        try:
            return fn()
        except BentoHttpError as exc:
            raise self._classify(exc, where) from None
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise TransientProviderError(f"connection problem: {type(exc).__name__}", **where) from None
        except BentoError as exc:  # the stream broke off mid-download
            raise TransientProviderError(f"download interrupted: {type(exc).__name__}", **where) from None
        except ValueError as exc:  # the client's own argument checks (bad dataset code, symbol form)
            raise TerminalProviderError(f"request refused by the client: {exc}", **where) from None

    def _classify(self, exc: Any, where: dict[str, Any]) -> ProviderError:
        status = int(exc.http_status)
        headers = exc.headers or {}
        common = {**where, "http_status": status, "request_id": exc.request_id}
        if status == 429 or status >= 500:
            header = headers.get("Retry-After")
            try:
                retry_after = float(header) if header else None
            except ValueError:
                retry_after = None
            what = "rate limited" if status == 429 else "server error"
            return TransientProviderError(f"{what} (HTTP {status})", retry_after=retry_after, **common)
        if status in (401, 403):
            return TerminalProviderError(
                f"HTTP {status}: the API key was refused or lacks this dataset; check {KEY_ENV}", **common
            )
        message = ": ".join(line for line in (exc.message or "").splitlines() if line)
        if "symbology" in message:
            message += "; check the symbols, the dataset and stype_in"
        return TerminalProviderError(f"HTTP {status}: {message}".rstrip(": "), **common)


def consolidate_venues(raw: pd.DataFrame) -> pd.DataFrame:
    """One bar per (symbol, ts) from per-venue bars (see the module doc for the rule)."""
    cols = ["symbol", "ts", "open", "high", "low", "close", "volume"]
    if not raw.duplicated(["symbol", "ts"]).any():
        return raw[cols]
    ranked = raw.sort_values(["symbol", "ts", "volume", "publisher_id"], ascending=[True, True, False, True])
    keys = ["symbol", "ts"]
    grouped = ranked.groupby(keys, sort=True)
    leader = grouped[["open", "close"]].first()
    extremes = grouped.agg(high=("high", "max"), low=("low", "min"), volume=("volume", "sum"))
    return leader.join(extremes).reset_index()[cols]
