"""`polygon-flatfiles`: Polygon/Massive day and minute aggregate flat files from their S3 bucket, with boto3.

- Files: `{dataset}/day_aggs_v1/YYYY/MM/YYYY-MM-DD.csv.gz` and `{dataset}/minute_aggs_v1/...`, gzip CSV with
  `ticker,volume,open,close,high,low,window_start,transactions` (`window_start` in ns since the epoch).
  One file holds every ticker of a date, so the flow plans one chunk per session date and fetches each date's
  file once for all requested symbols (`max_symbols_per_request`); the ledger still has one row per symbol.
  `--symbols ALL` loads each file whole, as one chunk with one ledger row per date (`every_symbol`).
- Settings (env, or provider options): CANDLEFLOW_FLATFILES_ENDPOINT_URL (default https://files.massive.com),
  CANDLEFLOW_FLATFILES_BUCKET (default `flatfiles`), CANDLEFLOW_FLATFILES_ACCESS_KEY_ID and
  CANDLEFLOW_FLATFILES_SECRET_ACCESS_KEY (the flat-file keys from the vendor's dashboard, not the REST key).
- Prices are as traded: the files are unadjusted, and every ledger row says `raw`.
- Datasets (`--option dataset=us_options_opra`, ...) are stored apart: `polygon-flatfiles` for US stocks,
  `polygon-flatfiles:opra` for options, and so on (`dataset_key`), as csv's named sources are.
- Timeframes: 1d from day files (stamped midnight New York, stored session-dated at 00:00 UTC); 1m from minute
  files (extended hours included); 5m, 15m and 1h aggregated from the minute files on the UTC grid (open of the
  first minute, close of the last, high/low extremes, volume and trades summed; no vwap).
- A date with no file is "not published" (the vendor publishes a day's files the next morning, ~11:00 ET):
  `source_versions` says so and the flow leaves the date for a later run. Each file's ETag is its version and
  is recorded in the ledger, so a republished file is fetched and reloaded.
- A ticker missing from a file has no bars that day (not listed yet, halted, delisted): files cannot tell an
  unknown ticker apart, so unknown symbols load as `empty` rather than failing (`knows_symbols=False`).
- Retries are Prefect's: boto3 makes one attempt. Throttling, 5xx and connection trouble are transient;
  refused keys name the key variables, a missing bucket names CANDLEFLOW_FLATFILES_BUCKET.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import io
from collections.abc import Iterable
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from candleflow.inputs import VENDOR_CASE
from candleflow.timeframes import ChunkPeriod, Timeframe
from providers.base import Capabilities, FetchRequest, FetchResult, Provider
from providers.errors import TerminalProviderError, connection_error, http_error
from providers.frames import NEW_YORK, aggregate_bars, canonical_frame, session_dated
from providers.settings import ProviderSettings

DEFAULT_ENDPOINT = "https://files.massive.com"
DEFAULT_BUCKET = "flatfiles"
_TRANSIENT_CODES = {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "ServiceUnavailable"}
_KEY_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "InvalidToken", "ExpiredToken"}


class FlatFilesSettings(ProviderSettings):
    model_config = SettingsConfigDict(env_prefix="CANDLEFLOW_FLATFILES_")

    endpoint_url: str | None = None  # default the vendor's
    bucket: str | None = None  # default `flatfiles`
    access_key_id: SecretStr | None = None
    secret_access_key: SecretStr | None = None
    dataset: str = Field(default="us_stocks_sip", pattern=r"^[a-z][a-z0-9_]{0,47}$")
    timeout_seconds: float = 60.0

    def missing_keys(self) -> str | None:
        keys = {"access_key_id": self.access_key_id, "secret_access_key": self.secret_access_key}
        return " and ".join(self.variable(field) for field, value in keys.items() if not _secret(value)) or None


def _secret(value: SecretStr | None) -> str | None:
    return value.get_secret_value() or None if value is not None else None


class FlatFilesProvider(Provider[FlatFilesSettings]):
    """Prices as traded (raw: the files are unadjusted), extended hours."""

    name = "polygon-flatfiles"
    settings_class = FlatFilesSettings
    capabilities = Capabilities(
        requests_per_second=10.0,
        max_symbols_per_request=100_000,  # a file holds every ticker of its date
        chunk_period=ChunkPeriod.SESSION,
        knows_symbols=False,
        bars_only_when_traded=True,
        versioned_sources=True,
        session_hours="extended",
        symbol_rule=VENDOR_CASE,  # the files' tickers as written: BRK.A, lower-case markers, O: option tickers
        every_symbol=("1m", "5m", "15m", "1h", "1d"),  # `--symbols ALL`: each date's file whole
    )

    @property
    def stored_as(self) -> str:
        """Each dataset is a collection of its own: `polygon-flatfiles` for US stocks, `polygon-flatfiles:opra` for
        options and so on, so a run of every ticker of one dataset never takes another's bars for its own."""
        return dataset_key(self.settings.dataset)

    @property
    def bucket(self) -> str:
        return self.settings.bucket or DEFAULT_BUCKET

    def _client(self) -> Any:
        settings = self.settings
        key_id, secret = _secret(settings.access_key_id), _secret(settings.secret_access_key)
        if not key_id or not secret:
            raise TerminalProviderError(f"no flat-file keys: set {self._key_variables()}", provider=self.name)
        return _s3_client(settings.endpoint_url or DEFAULT_ENDPOINT, key_id, secret, settings.timeout_seconds)

    def key(self, timeframe: Timeframe, date: dt.date) -> str:
        kind = "minute_aggs_v1" if timeframe.intraday else "day_aggs_v1"
        return f"{self.settings.dataset}/{kind}/{date:%Y}/{date:%m}/{date:%Y-%m-%d}.csv.gz"

    def probe(self) -> str:
        """One key of the bucket's listing."""
        client = self._client()
        self._call(lambda: client.list_objects_v2(Bucket=self.bucket, MaxKeys=1))
        return f"bucket {self.bucket} lists its files"

    def source_versions(self, timeframe: Timeframe, dates: list[dt.date]) -> dict[dt.date, str | None]:
        """Each date's file ETag, None when the file is not published; one listing per month."""
        client = self._client()
        wanted = {self.key(timeframe, d): d for d in dates}
        found: dict[str, str] = {}
        for prefix in sorted({k.rsplit("/", 1)[0] + "/" for k in wanted}):
            pages = self._call(
                lambda p=prefix: list(client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=p))
            )
            for page in pages:
                found.update({obj["Key"]: obj["ETag"].strip('"') for obj in page.get("Contents", [])})
        return {d: found.get(k) for k, d in wanted.items()}

    def fetch(self, request: FetchRequest) -> FetchResult:
        """Bars of the request's symbols from each date's file in the window; dates without a file add none
        (the flow has already set unpublished dates aside, see `source_versions`)."""
        client = self._client()
        tables, etags = [], []
        for date in _file_dates(request):
            key = self.key(request.timeframe, date)
            response = self._call(lambda k=key: client.get_object(Bucket=self.bucket, Key=k), request, missing_ok=True)
            if response is None:
                continue
            body = self._call(lambda r=response: r["Body"].read(), request)
            etags.append(response["ETag"].strip('"'))
            tables.append(_read_symbols(body, None if request.every else request.symbols))
        return FetchResult(_to_bars(tables, request, self.stored_as), source_version=_combined(etags))

    def _call(self, fn: Any, request: FetchRequest | None = None, missing_ok: bool = False) -> Any:
        from botocore import exceptions as bex

        symbols = request.symbols if request else ()
        window = (request.start, request.end) if request else None
        where: dict[str, Any] = {"provider": self.name, "symbols": symbols, "window": window}
        try:
            return fn()
        except bex.ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            meta = exc.response.get("ResponseMetadata", {})
            status, request_id = meta.get("HTTPStatusCode"), meta.get("RequestId")
            if missing_ok and code in ("NoSuchKey", "404"):
                return None
            if code == "NoSuchBucket":
                raise TerminalProviderError(
                    f"no bucket {self.bucket!r}: check {self.settings.variable('bucket')}",
                    http_status=status,
                    request_id=request_id,
                    **where,
                ) from None
            raise http_error(
                status,
                where,
                request_id=request_id,
                label=code,
                refused=f"check {self._key_variables()} (the flat-file keys, not the REST API key)",
                transient=code in _TRANSIENT_CODES,
                key_refused=code in _KEY_CODES,
            ) from None
        except (bex.EndpointConnectionError, bex.ConnectTimeoutError, bex.ReadTimeoutError) as exc:
            raise connection_error(exc, where) from None
        except (bex.ConnectionClosedError, bex.ResponseStreamingError) as exc:
            raise connection_error(exc, where, "connection dropped") from None

    def _key_variables(self) -> str:
        return " and ".join(self.settings.variable(field) for field in ("access_key_id", "secret_access_key"))


@functools.lru_cache(maxsize=8)
def _s3_client(endpoint_url: str, key_id: str, secret: str, timeout_seconds: float) -> Any:
    """One boto3 client per endpoint and keys, shared by the process's fetches (boto3's clients are thread-safe):
    making one loads botocore's service models, 0.27 s of every file's 0.35 s fetch here before it was kept."""
    import boto3
    from botocore.config import Config

    config = Config(
        retries={"total_max_attempts": 1},  # Prefect retries
        connect_timeout=timeout_seconds,
        read_timeout=timeout_seconds,
        signature_version="s3v4",
        s3={"addressing_style": "path"},
        max_pool_connections=32,  # the task workers' fetches at once
    )
    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint_url,
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
        region_name="us-east-1",
        config=config,
    )


# The provider key of each of the vendor's flat-file datasets (its bars and ledger rows are stored under it). US
# stocks keep the provider's name; a dataset not listed here is keyed by its own name, shortened to fit the
# 32-character provider column.
_DATASET_KEYS = {
    "us_stocks_sip": "",
    "us_options_opra": "opra",
    "us_indices": "indices",
    "global_crypto": "crypto",
    "global_forex": "forex",
    "us_futures_cme": "futures-cme",
}


def dataset_key(dataset: str) -> str:
    """`polygon-flatfiles`, `polygon-flatfiles:opra`, ...: where a dataset's bars are stored."""
    short = _DATASET_KEYS.get(dataset)
    if short is None:
        short = dataset.replace("_", "-")
        if len(short) > 14:
            short = short[:9].rstrip("-") + "-" + hashlib.blake2b(dataset.encode(), digest_size=2).hexdigest()
    return f"{FlatFilesProvider.name}:{short}" if short else FlatFilesProvider.name


def _file_dates(request: FetchRequest) -> list[dt.date]:
    """The dates whose file can hold bars in the request's window (local New York dates for minute files)."""
    last = request.end - pd.Timedelta(microseconds=1)
    if request.timeframe.intraday:
        first_day, last_day = request.start.tz_convert(NEW_YORK).date(), last.tz_convert(NEW_YORK).date()
    else:
        first_day, last_day = request.start.date(), last.date()
    days = pd.date_range(first_day, last_day, freq="D")
    return [d.date() for d in days if d.day_of_week < 5]  # the vendor publishes no weekend files


# The files' columns, typed up front: a stream's later batches cannot change what its first one inferred (volumes
# are whole numbers in stock files, not in every dataset's).
_COLUMN_TYPES = {
    "ticker": pa.string(),
    "volume": pa.float64(),
    "open": pa.float64(),
    "close": pa.float64(),
    "high": pa.float64(),
    "low": pa.float64(),
    "window_start": pa.int64(),
    "transactions": pa.int64(),
}


def _read_symbols(body: bytes, symbols: Iterable[str] | None) -> pa.Table:
    """The file's rows of `symbols`, or every row (None: `--symbols ALL`), read as a stream of record batches
    (pyarrow's CSV reader, decompressing as it goes): a request for a few tickers of a two-million-row minute
    file keeps only their rows, never the whole file's table."""
    stream = pa.input_stream(io.BytesIO(body), compression="gzip")
    options = pacsv.ConvertOptions(column_types=_COLUMN_TYPES)
    reader = pacsv.open_csv(stream, read_options=pacsv.ReadOptions(block_size=8 << 20), convert_options=options)
    wanted = None if symbols is None else pa.array(sorted(set(symbols)), pa.string())
    batches = []
    for batch in reader:
        batches.append(batch if wanted is None else batch.filter(pc.is_in(batch["ticker"], value_set=wanted)))
    return pa.Table.from_batches(batches, schema=reader.schema)


def _to_bars(tables: list[pa.Table], request: FetchRequest, name: str) -> pd.DataFrame:
    tf = request.timeframe.name
    if not tables:
        return canonical_frame(pd.DataFrame({"symbol": [], "ts": []}), provider=name, timeframe=tf)
    raw = pa.concat_tables(tables, promote_options="permissive").to_pandas()
    ts = pd.to_datetime(raw["window_start"], unit="ns", utc=True)
    frame = pd.DataFrame(
        {
            "symbol": raw["ticker"],
            "ts": session_dated(ts) if not request.timeframe.intraday else ts,
            "open": raw["open"],
            "high": raw["high"],
            "low": raw["low"],
            "close": raw["close"],
            "volume": raw["volume"],
            "trades": raw["transactions"],
        }
    )
    if request.timeframe.intraday and request.timeframe.step > pd.Timedelta(minutes=1):
        frame = aggregate_bars(frame, request.timeframe.step)
    frame = frame[(frame["ts"] >= request.start) & (frame["ts"] < request.end)]
    return canonical_frame(frame, provider=name, timeframe=tf)


def _combined(etags: list[str]) -> str | None:
    """One file's ETag, or a digest of several (a window spanning dates); None when no file was read."""
    if len(etags) <= 1:
        return etags[0] if etags else None
    return "multi:" + hashlib.blake2b(",".join(etags).encode(), digest_size=16).hexdigest()
