"""polygon-flatfiles: boto3 against a local S3 server (moto's server mode) holding files in the vendor's layout."""

import datetime as dt

import pandas as pd
import pytest

from candleflow.model import LedgerStatus
from candleflow.timeframes import get_timeframe
from flows.backfill import historical_backfill
from providers import get_provider
from providers.base import FetchRequest, FetchResult
from providers.errors import TerminalProviderError, TransientProviderError
from tests.conftest import count
from tests.flatfiles_server import ACCESS_KEY, SECRET_KEY, FlatFilesStandIn
from tests.providers_support import synthetic_bars
from warehouse.engine import get_engine
from warehouse.queries import read_ledger

D = dt.date


def fetch(symbols: tuple[str, ...], tf: str, start: str, end: str, **options: object) -> pd.DataFrame:
    return fetch_result(symbols, tf, start, end, **options).bars


def fetch_result(symbols: tuple[str, ...], tf: str, start: str, end: str, **options: object) -> FetchResult:
    request = FetchRequest(symbols, get_timeframe(tf), pd.Timestamp(start, tz="UTC"), pd.Timestamp(end, tz="UTC"))
    return get_provider("polygon-flatfiles", options).fetch(request)


def test_day_files_become_session_dated_across_the_dst_change(files: FlatFilesStandIn) -> None:
    files.publish(["AAPL"], D(2024, 3, 7), D(2024, 3, 12), minutes=False)  # DST began 2024-03-10
    frame = fetch(("AAPL",), "1d", "2024-03-07", "2024-03-13")
    assert frame["ts"].dt.strftime("%Y-%m-%d %H:%M").tolist() == [
        "2024-03-07 00:00",
        "2024-03-08 00:00",
        "2024-03-11 00:00",
        "2024-03-12 00:00",
    ]
    expected = synthetic_bars("AAPL", "1d", pd.Timestamp("2024-03-07", tz="UTC"), pd.Timestamp("2024-03-13", tz="UTC"))
    assert frame["close"].tolist() == expected["close"].tolist()
    assert frame["vwap"].isna().all()  # the files carry no vwap


def test_one_file_serves_many_symbols_and_only_those(files: FlatFilesStandIn) -> None:
    files.publish(["AAPL", "MSFT"], D(2024, 1, 8), D(2024, 1, 8))
    result = fetch_result(("MSFT", "AAPL"), "15m", "2024-01-08 05:00", "2024-01-09 05:00")
    frame = result.bars
    assert set(frame["symbol"]) == {"AAPL", "MSFT"}  # the file's other tickers are left out
    for symbol in ("AAPL", "MSFT"):
        mine = frame[frame["symbol"] == symbol].reset_index(drop=True)
        day = pd.Timestamp("2024-01-08", tz="UTC")
        expected = synthetic_bars(symbol, "15m", day, day + pd.Timedelta(days=1))
        cols = ["ts", "open", "high", "low", "close", "volume"]
        pd.testing.assert_frame_equal(mine[cols], expected[cols])
    head = files.client.head_object(Bucket="flatfiles", Key=files.keys[-1])
    assert result.source_version == head["ETag"].strip('"')


def test_source_versions_say_which_dates_are_published(files: FlatFilesStandIn) -> None:
    etag = files.put(D(2024, 1, 8), "day_aggs_v1", synthetic_bars("AAPL", "1d").head(0))
    provider = get_provider("polygon-flatfiles")
    versions = provider.source_versions(get_timeframe("1d"), [D(2024, 1, 8), D(2024, 1, 9), D(2024, 2, 1)])
    assert versions == {D(2024, 1, 8): etag, D(2024, 1, 9): None, D(2024, 2, 1): None}


def test_a_missing_bucket_names_its_setting(files: FlatFilesStandIn) -> None:
    with pytest.raises(TerminalProviderError, match="CANDLEFLOW_FLATFILES_BUCKET"):
        get_provider("polygon-flatfiles", {"bucket": "no-such-bucket"}).source_versions(
            get_timeframe("1d"), [D(2024, 1, 8)]
        )


def test_missing_keys_name_the_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CANDLEFLOW_FLATFILES_ACCESS_KEY_ID", raising=False)
    monkeypatch.delenv("CANDLEFLOW_FLATFILES_SECRET_ACCESS_KEY", raising=False)
    with pytest.raises(TerminalProviderError, match="CANDLEFLOW_FLATFILES_ACCESS_KEY_ID") as info:
        fetch(("AAPL",), "1d", "2024-01-08", "2024-01-09")
    assert SECRET_KEY not in str(info.value) and ACCESS_KEY not in str(info.value)


def test_an_unreachable_endpoint_is_transient(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CANDLEFLOW_FLATFILES_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("CANDLEFLOW_FLATFILES_SECRET_ACCESS_KEY", SECRET_KEY)
    with pytest.raises(TransientProviderError, match="connection"):
        fetch(("AAPL",), "1d", "2024-01-08", "2024-01-09", endpoint_url="http://127.0.0.1:9", timeout_seconds=2)


@pytest.mark.flows
@pytest.mark.usefixtures("prefect_harness")
def test_backfill_by_date_skips_unpublished_dates_and_reloads_republished_files(
    files: FlatFilesStandIn, warehouse_url: str
) -> None:
    files.publish(["AAPL", "MSFT"], D(2024, 1, 2), D(2024, 1, 10), minutes=False)  # Jan 11 and 12: not yet
    args = dict(
        symbols=["AAPL", "MSFT"],
        start=D(2024, 1, 2),
        end=D(2024, 1, 12),
        provider="polygon-flatfiles",
        warehouse_url=warehouse_url,
    )
    first = historical_backfill(**args)
    assert first.ok and first.planned == 2 * 9 and len(first.not_published) == 2 * 2
    assert first.counts()["loaded"] == 2 * 7 and "not published yet" in first.headline()
    assert count(warehouse_url, "SELECT count(*) FROM bars") == 2 * 7
    ledger = read_ledger(get_engine(warehouse_url), "polygon-flatfiles")
    assert len(ledger) == 14 and {e.adjustment for e in ledger} == {"raw"}
    assert all(e.source_version and len(e.source_version) == 32 for e in ledger)  # each file's ETag

    second = historical_backfill(**args)
    assert second.results == [] and second.skipped == 14 and len(second.not_published) == 4

    # the vendor republishes Jan 9 with a corrected AAPL close, and publishes Jan 11
    day = pd.Timestamp("2024-01-09", tz="UTC")
    corrected = pd.concat([synthetic_bars(s, "1d", day, day + pd.Timedelta(days=1)) for s in ("AAPL", "MSFT")])
    corrected.loc[corrected["symbol"] == "AAPL", "close"] += 0.5
    corrected["high"] = corrected[["high", "close"]].max(axis=1)
    files.put(D(2024, 1, 9), "day_aggs_v1", corrected)
    files.publish(["AAPL", "MSFT"], D(2024, 1, 11), D(2024, 1, 11), minutes=False)
    third = historical_backfill(**args)
    assert sorted((r.chunk.symbol, str(r.chunk.window_start.date())) for r in third.results) == [
        ("AAPL", "2024-01-09"),
        ("AAPL", "2024-01-11"),
        ("MSFT", "2024-01-09"),
        ("MSFT", "2024-01-11"),
    ]
    by_symbol = {r.chunk.symbol + str(r.chunk.window_start.date()): r for r in third.results}
    assert by_symbol["MSFT2024-01-09"].unchanged and not by_symbol["AAPL2024-01-09"].unchanged
    with get_engine(warehouse_url).connect() as conn:
        close = pd.read_sql(
            "SELECT close FROM bars WHERE symbol = 'AAPL' AND ts >= '2024-01-09' AND ts < '2024-01-10'", conn
        )["close"]
    assert close.tolist() == corrected.loc[corrected["symbol"] == "AAPL", "close"].tolist()
    assert len(third.not_published) == 2


@pytest.mark.flows
@pytest.mark.usefixtures("prefect_harness")
def test_minute_files_load_per_session_with_extended_hours_windows(files: FlatFilesStandIn, sqlite_url: str) -> None:
    files.publish(["AAPL", "MSFT"], D(2024, 3, 7), D(2024, 3, 11))  # across the DST change
    summary = historical_backfill(
        symbols=["AAPL", "MSFT", "NOPE"],
        start=D(2024, 3, 7),
        end=D(2024, 3, 11),
        timeframe="1m",
        provider="polygon-flatfiles",
        warehouse_url=sqlite_url,
    )
    assert summary.ok and summary.counts() == {"loaded": 6, "empty": 3, "partial": 0, "rejected": 0, "failed": 0}
    assert count(sqlite_url, "SELECT count(*) FROM bars") == 2 * 3 * 390
    windows = {
        (e.window_start.isoformat(), e.window_end.isoformat())
        for e in read_ledger(get_engine(sqlite_url), "polygon-flatfiles")
    }
    assert ("2024-03-08T05:00:00+00:00", "2024-03-09T05:00:00+00:00") in windows  # midnight New York (EST)
    assert ("2024-03-11T04:00:00+00:00", "2024-03-12T04:00:00+00:00") in windows  # after the change (EDT)
    assert {e.status for e in read_ledger(get_engine(sqlite_url), "polygon-flatfiles", ["NOPE"])} == {
        LedgerStatus.EMPTY
    }
