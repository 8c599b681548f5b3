"""`databento`: OHLCV bars from Databento's historical API through the vendor's own `databento` client.

- Settings (`DatabentoSettings`): each option, else $CANDLEFLOW_DATABENTO_<OPTION>. Key: $DATABENTO_API_KEY (or a
  Prefect Secret block named in $CANDLEFLOW_DATABENTO_API_KEY_BLOCK, see tasks/secrets.py). Dataset: the `dataset`
  option or $CANDLEFLOW_DATABENTO_DATASET (e.g. XNAS.ITCH, GLBX.MDP3, OPRA.PILLAR); required, since every request costs.
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
  `--symbols ALL` asks for the vendor's `ALL_SYMBOLS` of the dataset, one request per session at every
  timeframe; each bar keeps the raw symbol the answer's symbology maps its instrument to.
  `stype_in` picks the symbology (raw_symbol, continuous, instrument_id, ...); `parent` is refused for bars, since
  it maps one symbol to many instruments: a named universe of its contracts takes it (below). Unknown symbols
  are terminal errors naming them.
- Reference data (`list_symbols`, for named universes): the contracts of futures parents (`ES.FUT`) through
  `symbology.resolve`, free of charge: parent -> instrument ids, then instrument ids -> raw symbols (the
  vendor's two supported combinations), over the last 7 days (contracts trading now) or, with inactive ones too,
  the last 10 years.
- Errors: 429 and 5xx and connection trouble are transient (Retry-After kept); 401/403 terminal naming
  DATABENTO_API_KEY; other 4xx terminal with the vendor's message. The client itself never retries.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import pandas as pd
from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from candleflow.errors import BadInputError
from candleflow.universes import ReferenceQuery
from providers.base import Capabilities, FetchRequest, FetchResult, Provider
from providers.errors import TerminalProviderError, connection_error, http_error
from providers.frames import aggregate_bars, canonical_frame
from providers.settings import ApiKeySettings

_SCHEMAS = {"1m": "ohlcv-1m", "5m": "ohlcv-1m", "15m": "ohlcv-1m", "1h": "ohlcv-1h", "1d": "ohlcv-1d"}
ALL_SYMBOLS = "ALL_SYMBOLS"  # the vendor's name for every instrument of a dataset
_STYPES = ("raw_symbol", "instrument_id", "continuous", "smart", "isin", "cusip", "figi", "bbg_comp_id")


class DatabentoSettings(ApiKeySettings):
    model_config = SettingsConfigDict(env_prefix="CANDLEFLOW_DATABENTO_")

    dataset: str | None = None  # required: every request costs
    stype_in: str = "raw_symbol"
    gateway: str | None = None  # default the client's
    api_key: SecretStr | None = Field(default=None, validation_alias="DATABENTO_API_KEY")
    publisher_id: int | None = None  # keep one venue's bars; default: consolidate venues (see the module doc)

    @field_validator("stype_in")
    @classmethod
    def _one_instrument_per_symbol(cls, value: str) -> str:
        if value not in _STYPES:
            raise ValueError(f"{value!r} is not supported: use one of {', '.join(_STYPES)}")
        return value

    @model_validator(mode="after")
    def _dataset_is_known(self) -> DatabentoSettings:
        if not self.dataset:
            variable = self.variable("dataset")
            raise ValueError(f"no dataset: set {variable} or --option dataset=XNAS.ITCH (every request costs)")
        return self


class DatabentoProvider(Provider[DatabentoSettings]):
    """Prices as traded (raw), extended hours."""

    name = "databento"
    settings_class = DatabentoSettings
    capabilities = Capabilities(
        requests_per_second=20.0,
        max_symbols_per_request=2000,
        bars_only_when_traded=True,
        charges=True,
        session_hours="extended",
        every_symbol=("1m", "5m", "15m", "1h", "1d"),  # ALL_SYMBOLS: every instrument of the dataset
        lists_symbols=True,  # the contracts of futures parents (ES.FUT), for named universes
    )

    def _client(self, request: FetchRequest | None = None) -> Any:
        import databento

        key, gateway = self.settings.key(), self.settings.gateway
        if not key:
            raise TerminalProviderError(f"no API key: set {self.settings.key_variables()}", **self._where(request))
        return databento.Historical(key=key, **({"gateway": gateway} if gateway else {}))

    def _where(self, request: FetchRequest | None) -> dict[str, Any]:
        if request is None:
            return {"provider": self.name}
        return {"provider": self.name, "symbols": request.symbols, "window": (request.start, request.end)}

    def _query(self, request: FetchRequest) -> dict[str, Any]:
        return {
            "dataset": self.settings.dataset,
            "start": request.start,
            "end": request.end,
            "symbols": ALL_SYMBOLS if request.every else list(request.symbols),
            "schema": _SCHEMAS[request.timeframe.name],
            "stype_in": self.settings.stype_in,
        }

    def list_symbols(self, query: ReferenceQuery, pace: Callable[[int], None] | None = None) -> list[str]:
        """The raw symbols of the contracts of `query.parents` in the dataset (see the module doc), sorted."""
        query.check()
        if not query.parents or query.type or query.exchange or query.market != "stocks":
            raise BadInputError(
                "provider databento lists the contracts of futures parents: give --parent ES.FUT (and no market, "
                "type or exchange filter)"
            )
        client = self._client()
        today = pd.Timestamp.now(tz="UTC").normalize()
        start = (today - pd.Timedelta(days=7 if query.active else 3653)).date()
        end = (today + pd.Timedelta(days=1)).date()
        resolve = client.symbology.resolve
        parents = self._call(
            lambda: resolve(self.settings.dataset, list(query.parents), "parent", "instrument_id", start, end), None
        )
        unknown = [p for p in query.parents if not parents.get("result", {}).get(p)]
        if unknown:
            raise BadInputError(
                f"parent symbol(s) {', '.join(unknown)} resolve to no contract in {self.settings.dataset} from "
                f"{start} to {end}: check the product and the dataset (e.g. GLBX.MDP3 for CME futures)"
            )
        ids = sorted({m["s"] for mappings in parents["result"].values() for m in mappings}, key=int)
        raw: set[str] = set()
        for i in range(0, len(ids), self.capabilities.max_symbols_per_request):
            if pace is not None:
                pace(1)  # each further request takes a slot of the rate
            batch = ids[i : i + self.capabilities.max_symbols_per_request]
            found = self._call(
                lambda b=batch: resolve(self.settings.dataset, b, "instrument_id", "raw_symbol", start, end), None
            )
            raw |= {m["s"] for mappings in found.get("result", {}).values() for m in mappings}
        return sorted(raw)

    def estimate_cost(self, requests: list[FetchRequest]) -> float:
        """The vendor's quote in US dollars for `requests`, from `metadata.get_cost` (nothing is downloaded)."""
        if not requests:
            return 0.0
        client = self._client(requests[0])
        return float(sum(self._call(lambda r=r: client.metadata.get_cost(**self._query(r)), r) for r in requests))

    def probe(self) -> str:
        """The metadata's list of datasets the key may use: the configured dataset must be one of them."""
        client = self._client()
        datasets = self._call(lambda: client.metadata.list_datasets(), None)
        if self.settings.dataset not in datasets:
            raise TerminalProviderError(
                f"the key may not use dataset {self.settings.dataset} (it has {', '.join(datasets[:8]) or 'none'}): "
                f"fix {self.settings.variable('dataset')} or the key's licences",
                provider=self.name,
                http_status=403,
            )
        return f"the metadata lists dataset {self.settings.dataset} for the key"

    def fetch(self, request: FetchRequest) -> FetchResult:
        client = self._client(request)
        with warnings.catch_warnings(record=True) as caught:  # the vendor reports unresolved symbols as warnings
            warnings.simplefilter("always")
            store = self._call(lambda: client.timeseries.get_range(**self._query(request)), request)
            raw = store.to_df().reset_index()
        unknown = sorted(set(store.metadata.not_found) & set(request.symbols))
        if not unknown and not request.every:
            unknown = [s for s in request.symbols if any(f"'{s}'" in str(w.message) for w in caught)]
        if unknown and len(unknown) == len(request.symbols):
            raise TerminalProviderError(
                f"unknown symbol(s) {', '.join(unknown)} in {self.settings.dataset} ({self.settings.stype_in}): "
                "check the symbols, the dataset and stype_in",
                **self._where(request),
            )
        return FetchResult(self._bars(raw, request), unknown_symbols=tuple(unknown))

    def _bars(self, raw: pd.DataFrame, request: FetchRequest) -> pd.DataFrame:
        tf = request.timeframe
        if raw.empty:
            return canonical_frame(pd.DataFrame({"symbol": [], "ts": []}), provider=self.name, timeframe=tf.name)
        raw = raw.rename(columns={"ts_event": "ts"})
        if self.settings.publisher_id is not None:
            raw = raw[raw["publisher_id"] == self.settings.publisher_id]
        bars = consolidate_venues(raw if request.every else raw[raw["symbol"].isin(request.symbols)])
        if tf.intraday and tf.step > pd.Timedelta(minutes=1):
            bars = aggregate_bars(bars, tf.step)
        bars = bars[(bars["ts"] >= request.start) & (bars["ts"] < request.end)]
        return canonical_frame(bars, provider=self.name, timeframe=tf.name)

    def _call(self, fn: Any, request: FetchRequest | None) -> Any:
        import requests
        from databento.common.error import BentoError, BentoHttpError

        where = self._where(request)
        try:
            return fn()
        except BentoHttpError as exc:
            message = ": ".join(line for line in (exc.message or "").splitlines() if line)
            if "symbology" in message:
                message += "; check the symbols, the dataset and stype_in"
            raise http_error(
                int(exc.http_status),
                where,
                request_id=exc.request_id,
                retry_after=(exc.headers or {}).get("Retry-After"),
                refused=f"the API key was refused or lacks this dataset; check {self.settings.key_variables()}",
                detail=f": {message}".rstrip(": "),
            ) from None
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise connection_error(exc, where) from None
        except BentoError as exc:  # the stream broke off mid-download
            raise connection_error(exc, where, "download interrupted") from None
        except ValueError as exc:  # the client's own argument checks (bad dataset code, symbol form)
            raise TerminalProviderError(f"request refused by the client: {exc}", **where) from None


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
