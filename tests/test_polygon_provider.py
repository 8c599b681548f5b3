"""The polygon provider through the real `massive` client against a local stand-in server."""

from collections.abc import Iterator

import pandas as pd
import pytest

from candleflow.model import Chunk
from candleflow.timeframes import get_timeframe
from expectations import validate_bars
from providers import get_provider
from providers.base import FetchRequest
from providers.errors import TerminalProviderError, TransientProviderError
from tests.polygon_server import KEY, PolygonStandIn, polygon_stand_in
from tests.providers_support import synthetic_bars


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[PolygonStandIn]:
    with polygon_stand_in({"AAPL", "MSFT"}, page_size=500) as srv:
        monkeypatch.setenv("MASSIVE_API_KEY", KEY)
        monkeypatch.setenv("CANDLEFLOW_POLYGON_BASE_URL", srv.url)
        yield srv


def fetch(symbol: str, tf: str, start: str, end: str, **options: object) -> pd.DataFrame:
    request = FetchRequest((symbol,), get_timeframe(tf), pd.Timestamp(start, tz="UTC"), pd.Timestamp(end, tz="UTC"))
    return get_provider("polygon", options).fetch(request).bars


def test_recorded_daily_bars_become_session_dated(server: PolygonStandIn) -> None:
    frame = fetch("AAPL", "1d", "2005-04-01", "2005-04-05")
    # the vendor sent t = 05:00Z then 04:00Z (midnight New York across the DST change)
    assert frame["ts"].dt.strftime("%Y-%m-%d %H:%M").tolist() == ["2005-04-01 00:00", "2005-04-04 00:00"]
    assert frame[["open", "close", "vwap"]].iloc[0].tolist() == [1.5032, 1.4604, 1.469]
    assert frame["trades"].tolist() == [82132, 65543]
    chunk = Chunk("polygon", "AAPL", "1d", pd.Timestamp("2005-01-01", tz="UTC"), pd.Timestamp("2006-01-01", tz="UTC"))
    assert validate_bars([(chunk, frame)]).ok


def test_every_page_is_followed(server: PolygonStandIn) -> None:
    frame = fetch("MSFT", "1m", "2024-03-04", "2024-03-09")
    expected = synthetic_bars("MSFT", "1m", pd.Timestamp("2024-03-04", tz="UTC"), pd.Timestamp("2024-03-09", tz="UTC"))
    assert len(frame) == len(expected) == 5 * 390
    assert (frame["ts"].to_numpy() == expected["ts"].to_numpy()).all()
    aggs = [r for r in server.requests if "/v2/aggs/" in r["path"]]
    assert len(aggs) == 4 and "cursor=" in aggs[-1]["path"]  # 1950 bars in pages of 500
    assert "limit=50000" in aggs[0]["path"] and "adjusted=true" in aggs[0]["path"]


def test_adjusted_is_an_explicit_choice(server: PolygonStandIn) -> None:
    fetch("MSFT", "1d", "2024-03-04", "2024-03-09", adjusted=False)
    assert "adjusted=false" in server.requests[-1]["path"]


@pytest.mark.parametrize("status", [429, 500, 502, 503])
def test_rate_limits_and_server_errors_are_transient_without_client_retries(
    server: PolygonStandIn, status: int
) -> None:
    server.scripted.append((status, {"Retry-After": "7"}))
    with pytest.raises(TransientProviderError) as info:
        fetch("MSFT", "1d", "2024-03-04", "2024-03-09")
    assert info.value.http_status == status and info.value.request_id == "req-1"
    assert len(server.requests) == 1  # the client did not retry behind Prefect's back
    if status == 429:
        assert info.value.retry_after == 7.0
    assert len(fetch("MSFT", "1d", "2024-03-04", "2024-03-09")) == 5  # the next call succeeds


def test_bad_key_is_terminal_and_names_the_variable_never_the_key(server: PolygonStandIn, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("MASSIVE_API_KEY", "wrong-key-9d1c")
    with pytest.raises(TerminalProviderError) as info:
        fetch("MSFT", "1d", "2024-03-04", "2024-03-09")
    assert info.value.http_status == 401 and "MASSIVE_API_KEY" in str(info.value)
    assert "wrong-key-9d1c" not in str(info.value) and "wrong-key-9d1c" not in repr(info.value.args)
    assert all("wrong-key" not in r["path"] for r in server.requests)  # sent as a header, never in the URL


def test_missing_key_is_terminal(server: PolygonStandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MASSIVE_API_KEY")
    monkeypatch.delenv("POLYGON_API_KEY", raising=False)
    with pytest.raises(TerminalProviderError, match="set MASSIVE_API_KEY"):
        fetch("MSFT", "1d", "2024-03-04", "2024-03-09")
    monkeypatch.setenv("POLYGON_API_KEY", KEY)
    assert len(fetch("MSFT", "1d", "2024-03-04", "2024-03-09")) == 5


def test_unknown_ticker_is_terminal_but_an_empty_window_is_not(server: PolygonStandIn) -> None:
    with pytest.raises(TerminalProviderError, match="unknown ticker ZZZZ") as info:
        fetch("ZZZZ", "1d", "2024-03-04", "2024-03-09")
    assert info.value.http_status == 404
    assert fetch("MSFT", "1d", "2024-03-09", "2024-03-11").empty  # a weekend: known ticker, no bars


def test_unreachable_server_is_transient(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MASSIVE_API_KEY", KEY)
    monkeypatch.setenv("CANDLEFLOW_POLYGON_BASE_URL", "http://127.0.0.1:1")
    with pytest.raises(TransientProviderError, match="connection problem"):
        fetch("MSFT", "1d", "2024-03-04", "2024-03-09")


def test_slow_server_times_out_as_transient(server: PolygonStandIn) -> None:
    server.delay_seconds = 1.5
    with pytest.raises(TransientProviderError):
        fetch("MSFT", "1d", "2024-03-04", "2024-03-09", timeout_seconds=0.5)
