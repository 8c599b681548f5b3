from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from candleflow.timeframes import get_timeframe
from providers import get_provider
from providers.base import FetchRequest
from providers.errors import TerminalProviderError
from tests.conftest import FIXTURES
from tests.providers_support import synthetic_bars, write_csv_dir


def fetch(directory: Path, symbol: str, tf: str, start: str, end: str, **options: object) -> pd.DataFrame:
    provider = get_provider("csv", {"directory": str(directory), **options})
    return provider.fetch(
        FetchRequest((symbol,), get_timeframe(tf), pd.Timestamp(start, tz="UTC"), pd.Timestamp(end, tz="UTC"))
    ).bars


@pytest.fixture(scope="module")
def csv_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_csv_dir(tmp_path_factory.mktemp("csv"))


def test_yahoo_daily_file_in_any_order_round_trips(csv_dir: Path) -> None:
    frame = fetch(csv_dir, "AAPL", "1d", "2024-01-01", "2024-04-01")
    expected = synthetic_bars("AAPL", "1d")
    cols = ["ts", "open", "high", "low", "close", "volume"]
    pd.testing.assert_frame_equal(frame[cols], expected[cols])
    assert frame["vwap"].isna().all() and frame["trades"].isna().all()  # Yahoo files carry neither


def test_adjusted_scales_prices_by_adj_close(csv_dir: Path) -> None:
    raw = fetch(csv_dir, "AAPL", "1d", "2024-01-01", "2024-04-01")
    adjusted = fetch(csv_dir, "AAPL", "1d", "2024-01-01", "2024-04-01", adjusted=True)
    assert np.allclose(adjusted["close"], raw["close"] * 0.5) and np.allclose(adjusted["open"], raw["open"] * 0.5)
    assert (adjusted["volume"] == raw["volume"]).all()


def test_gzip_csv_and_parquet_intraday(csv_dir: Path) -> None:
    hourly = fetch(csv_dir, "MSFT", "1h", "2024-02-01", "2024-03-01")
    assert len(hourly) == 20 * 7 and hourly["trades"].notna().all()
    minutes = fetch(csv_dir, "MSFT", "1m", "2024-01-08", "2024-01-09")
    pd.testing.assert_frame_equal(
        minutes,
        synthetic_bars("MSFT", "1m", pd.Timestamp("2024-01-08", tz="UTC"), pd.Timestamp("2024-01-09", tz="UTC")).assign(
            provider="csv"
        ),
    )


def test_naive_intraday_times_are_read_in_the_timezone_option(tmp_path: Path) -> None:
    (tmp_path / "X_1m.csv").write_text("datetime,open,high,low,close,volume\n2024-07-01 09:30:00,10,11,9,10.5,100\n")
    frame = fetch(tmp_path, "X", "1m", "2024-07-01", "2024-07-02", timezone="America/New_York")
    assert frame["ts"].tolist() == [pd.Timestamp("2024-07-01 13:30", tz="UTC")]


def test_daily_bars_stamped_at_new_york_midnight_become_session_dates(tmp_path: Path) -> None:
    # the recorded Polygon AAPL daily bars, written as a user's export with the vendor's timestamps
    import json

    path = FIXTURES / "massive-client-python/test_rest/mocks/v2/aggs/ticker/AAPL/range/1/day/2005-04-01/2005-04-04.json"
    results = pd.DataFrame(json.loads(path.read_text())["results"])
    pd.DataFrame(
        {
            "timestamp": pd.to_datetime(results["t"], unit="ms", utc=True).astype(str),
            "open": results["o"],
            "high": results["h"],
            "low": results["l"],
            "close": results["c"],
            "volume": results["v"],
            "vwap": results["vw"],
            "trades": results["n"],
        }
    ).to_csv(tmp_path / "AAPL.csv", index=False)
    frame = fetch(tmp_path, "AAPL", "1d", "2005-01-01", "2006-01-01", timezone="America/New_York")
    assert frame["ts"].dt.strftime("%Y-%m-%d %H:%M").tolist() == ["2005-04-01 00:00", "2005-04-04 00:00"]
    assert frame["trades"].tolist() == [82132, 65543]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("Date,Open,High,Low,Close\n2024-01-02,1,2,1,2\n", "lacks volume"),
        ("when,open,high,low,close,volume\n2024-01-02,1,2,1,2,3\n", "lacks a time column"),
        ("Date,Open,High,Low,Close,Volume\nnot-a-date,1,2,1,2,3\n", "unreadable Date"),
    ],
)
def test_malformed_files_are_terminal_and_name_the_file(tmp_path: Path, content: str, message: str) -> None:
    (tmp_path / "BAD.csv").write_text(content)
    with pytest.raises(TerminalProviderError, match=message) as info:
        fetch(tmp_path, "BAD", "1d", "2024-01-01", "2024-02-01")
    assert "BAD.csv" in str(info.value)


def test_missing_directory_names_the_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CANDLEFLOW_CSV_DIR", raising=False)
    with pytest.raises(TerminalProviderError, match="set CANDLEFLOW_CSV_DIR"):
        get_provider("csv").fetch(
            FetchRequest(
                ("A",), get_timeframe("1d"), pd.Timestamp("2024-01-01", tz="UTC"), pd.Timestamp("2024-02-01", tz="UTC")
            )
        )
    monkeypatch.setenv("CANDLEFLOW_CSV_DIR", str(tmp_path / "nope"))
    with pytest.raises(TerminalProviderError, match="does not exist"):
        get_provider("csv").fetch(
            FetchRequest(
                ("A",), get_timeframe("1d"), pd.Timestamp("2024-01-01", tz="UTC"), pd.Timestamp("2024-02-01", tz="UTC")
            )
        )


# Shapes of real files that used to load wrongly or not at all (issue #10, defect 4).
MINUTES = pd.DataFrame(
    {
        "Date": ["03/04/2024"] * 3,
        "Time": ["09:31", "09:32", "09:33"],  # labelled by their end, in New York time
        "Open": [10.0, 10.1, 10.2],
        "High": [10.2, 10.3, 10.4],
        "Low": [9.9, 10.0, 10.1],
        "Last": [10.1, 10.2, 10.3],
        "Volume": [100, 200, 300],
        "OpenInt": [0, 0, 0],
    }
)


def test_separate_date_and_time_columns_and_end_labels(tmp_path: Path) -> None:
    MINUTES.to_csv(tmp_path / "ES_1m.csv", index=False)
    # 03/04/2024 reads both ways (no day above 12 tells): the order is given
    options = {"timezone": "America/New_York", "dayfirst": False}
    bars = fetch(tmp_path, "ES", "1m", "2024-03-04", "2024-03-05", label="end", **options)
    assert bars["ts"].tolist() == [pd.Timestamp(f"2024-03-04 14:{m}", tz="UTC") for m in (30, 31, 32)]
    assert bars["close"].tolist() == [10.1, 10.2, 10.3]  # Last is the close
    start_labelled = fetch(tmp_path, "ES", "1m", "2024-03-04", "2024-03-05", **options)
    assert start_labelled["ts"].iloc[0] == pd.Timestamp("2024-03-04 14:31", tz="UTC")


def test_a_file_of_many_tickers_serves_each_symbol(tmp_path: Path) -> None:
    daily = pd.concat(
        [synthetic_bars(s, "1d").assign(Ticker=s.lower()) for s in ("AAPL", "MSFT")], ignore_index=True
    ).rename(columns={"ts": "date", "close": "adj_close"})
    daily["close"] = daily["adj_close"] * 2
    daily["adj_volume"] = daily["volume"] * 2
    daily.drop(columns=["provider", "timeframe", "symbol"]).to_csv(tmp_path / "archive.csv", index=False)
    msft = fetch(tmp_path, "MSFT", "1d", "2024-01-01", "2024-04-01", file="archive.csv", adjusted=True)
    expected = synthetic_bars("MSFT", "1d")
    assert len(msft) == len(expected) and set(msft["symbol"]) == {"MSFT"}
    assert np.allclose(msft["close"], expected["close"]) and np.allclose(msft["volume"], 2 * expected["volume"])
    with pytest.raises(TerminalProviderError, match="holds tickers AAPL, MSFT but not IBM"):
        fetch(tmp_path, "IBM", "1d", "2024-01-01", "2024-04-01", file="archive.csv")


def test_adjust_volume_divides_by_the_price_factor(tmp_path: Path) -> None:
    pd.DataFrame(
        {
            "Date": ["2024-01-02"],
            "Open": [10],
            "High": [10],
            "Low": [10],
            "Close": [10],
            "Adj Close": [5],
            "Volume": [100],
        }
    ).to_csv(tmp_path / "X.csv", index=False)
    assert fetch(tmp_path, "X", "1d", "2024-01-01", "2024-02-01", adjusted=True)["volume"].tolist() == [100]
    assert fetch(tmp_path, "X", "1d", "2024-01-01", "2024-02-01", adjusted=True, adjust_volume=True)[
        "volume"
    ].tolist() == [200]


def test_columns_that_cannot_give_right_bars_are_named(tmp_path: Path) -> None:
    MINUTES.drop(columns=["Time"]).to_csv(tmp_path / "ES_1m.csv", index=False)  # the time of day is lost
    with pytest.raises(TerminalProviderError) as info:
        fetch(tmp_path, "ES", "1m", "2024-03-04", "2024-03-05", dayfirst=False)
    assert "2 row(s) share a timestamp with a different row for ES" in str(info.value)
    assert (
        "columns used: Date->date, Open->open, High->high, Low->low, Last->close, Volume->volume; ignored: OpenInt"
        in str(info.value)
    )
