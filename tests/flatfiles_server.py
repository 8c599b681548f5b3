"""A local S3 server (moto's server mode, real HTTP on 127.0.0.1) holding flat files in the vendor's layout,
written from synthetic bars so tests can compare what candleflow loads with what the files say."""

from __future__ import annotations

import datetime as dt
import gzip
import io
import logging
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import boto3
import pandas as pd

from candleflow.sessions import schedule
from tests.providers_support import synthetic_bars

ACCESS_KEY = "flat-key-7c1e"
SECRET_KEY = "flat-secret-93d0b2"
BUCKET = "flatfiles"
NOISE = ("ZZZA", "ZZZB", "ZZZC")  # other tickers every real file holds


def vendor_csv(bars: pd.DataFrame, *, daily: bool) -> bytes:
    """Canonical bars as a flat file: ticker,volume,open,close,high,low,window_start,transactions (ns)."""
    ts = bars["ts"]
    if daily:  # the vendor stamps day bars at midnight New York
        ts = ts.dt.tz_localize(None).dt.tz_localize("America/New_York").dt.tz_convert("UTC")
    frame = pd.DataFrame(
        {
            "ticker": bars["symbol"],
            "volume": bars["volume"].round().astype("int64"),
            "open": bars["open"],
            "close": bars["close"],
            "high": bars["high"],
            "low": bars["low"],
            "window_start": ts.astype("int64") * (1000 if str(ts.dtype).startswith("datetime64[us") else 1),
            "transactions": bars["trades"].fillna(0).astype("int64"),
        }
    )
    return gzip.compress(frame.to_csv(index=False).encode())


@dataclass
class FlatFilesStandIn:
    url: str
    client: Any
    keys: list[str] = field(default_factory=list)

    def env(self) -> dict[str, str]:
        return {
            "CANDLEFLOW_FLATFILES_ENDPOINT_URL": self.url,
            "CANDLEFLOW_FLATFILES_BUCKET": BUCKET,
            "CANDLEFLOW_FLATFILES_ACCESS_KEY_ID": ACCESS_KEY,
            "CANDLEFLOW_FLATFILES_SECRET_ACCESS_KEY": SECRET_KEY,
        }

    def put(self, date: dt.date, kind: str, bars: pd.DataFrame) -> str:
        """Publish (or republish) one date's file; returns its ETag."""
        key = f"us_stocks_sip/{kind}/{date:%Y}/{date:%m}/{date:%Y-%m-%d}.csv.gz"
        body = vendor_csv(bars, daily=kind == "day_aggs_v1")
        response = self.client.put_object(Bucket=BUCKET, Key=key, Body=body)
        self.keys.append(key)
        return str(response["ETag"]).strip('"')

    def put_body(self, date: dt.date, kind: str, body: bytes, dataset: str = "us_stocks_sip") -> str:
        """Publish one date's file of `dataset` as given (already in the vendor's gzip CSV); returns its ETag."""
        key = f"{dataset}/{kind}/{date:%Y}/{date:%m}/{date:%Y-%m-%d}.csv.gz"
        response = self.client.put_object(Bucket=BUCKET, Key=key, Body=body)
        self.keys.append(key)
        return str(response["ETag"]).strip('"')

    def delete(self, date: dt.date, kind: str) -> None:
        key = f"us_stocks_sip/{kind}/{date:%Y}/{date:%m}/{date:%Y-%m-%d}.csv.gz"
        self.client.delete_object(Bucket=BUCKET, Key=key)

    def publish(self, symbols: Sequence[str], start: dt.date, end: dt.date, *, minutes: bool = True) -> None:
        """Day files (and minute files) for every session start..end, for `symbols` plus noise tickers."""
        tickers = [*symbols, *NOISE]
        t0, t1 = pd.Timestamp(start, tz="UTC"), pd.Timestamp(end + dt.timedelta(days=1), tz="UTC")
        daily = pd.concat([synthetic_bars(s, "1d", t0, t1) for s in tickers])
        per_minute = pd.concat([synthetic_bars(s, "1m", t0, t1) for s in tickers]) if minutes else None
        for session in schedule(start, end).index:
            day = session.date()
            self.put(day, "day_aggs_v1", daily[daily["ts"].dt.date == day])
            if per_minute is not None:
                self.put(day, "minute_aggs_v1", per_minute[per_minute["ts"].dt.date == day])


@contextmanager
def flatfiles_stand_in() -> Iterator[FlatFilesStandIn]:
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        url = f"http://{host}:{port}"
        # moto keeps one store per process, whatever the server: start every stand-in empty
        urllib.request.urlopen(urllib.request.Request(f"{url}/moto-api/reset", method="POST"), timeout=10).close()
        client = boto3.session.Session().client(
            "s3",
            endpoint_url=url,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name="us-east-1",
        )
        client.create_bucket(Bucket=BUCKET)
        yield FlatFilesStandIn(url, client)
    finally:
        server.stop()


def read_gz(body: bytes) -> pd.DataFrame:
    return pd.read_csv(io.BytesIO(gzip.decompress(body)))
