"""Every provider answers the same way: canonical columns and dtypes, UTC, sorted, unique keys, the window
respected, and the same error classes for the same failures."""

import datetime as dt
from pathlib import Path

import pandas as pd
import pytest

from candleflow.model import BAR_COLUMNS
from candleflow.timeframes import get_timeframe
from providers import PROVIDERS, get_provider
from providers.base import FetchRequest
from providers.errors import TerminalProviderError
from tests.databento_server import KEY as DATABENTO_KEY
from tests.databento_server import databento_stand_in
from tests.flatfiles_server import flatfiles_stand_in
from tests.polygon_server import KEY, polygon_stand_in, reference_record
from tests.providers_support import SYMBOLS, provider_factories

pytestmark = pytest.mark.parametrize("name", sorted(PROVIDERS))


@pytest.fixture(scope="module")
def factories(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    with (
        polygon_stand_in({"AAPL", "MSFT"}, page_size=700) as server,
        flatfiles_stand_in() as files,
        databento_stand_in({"AAPL", "MSFT"}, tmp_path_factory.mktemp("ca")) as gateway,
        pytest.MonkeyPatch.context() as env,
    ):
        server.reference.append(reference_record("MSFT", active=False, delisted_utc="2024-02-01T00:00:00Z"))
        env.setenv("MASSIVE_API_KEY", KEY)
        env.setenv("DATABENTO_API_KEY", DATABENTO_KEY)
        env.setenv("REQUESTS_CA_BUNDLE", str(gateway.ca_bundle))
        for name, value in files.env().items():
            env.setenv(name, value)
        files.publish(SYMBOLS, dt.date(2024, 1, 1), dt.date(2024, 3, 31))
        yield {
            **provider_factories(tmp_path_factory.mktemp("providers")),
            "polygon": lambda: get_provider("polygon", {"base_url": server.url}),
            "polygon-flatfiles": lambda: get_provider("polygon-flatfiles"),
            "databento": lambda: get_provider("databento", {"dataset": "XNAS.ITCH", "gateway": gateway.url}),
        }


def request(symbols: tuple[str, ...], tf: str, start: str, end: str) -> FetchRequest:
    return FetchRequest(symbols, get_timeframe(tf), pd.Timestamp(start, tz="UTC"), pd.Timestamp(end, tz="UTC"))


def test_every_provider_is_covered(name: str, factories) -> None:  # type: ignore[no-untyped-def]
    assert name in factories, f"add {name} to tests/providers_support.py"


@pytest.mark.parametrize(
    ("tf", "start", "end"),
    [("1d", "2024-02-01", "2024-03-01"), ("1h", "2024-03-04", "2024-03-09"), ("1m", "2024-01-08", "2024-01-10")],
)
def test_canonical_frame(name: str, factories, tf: str, start: str, end: str) -> None:  # type: ignore[no-untyped-def]
    frame = factories[name]().fetch(request(SYMBOLS, tf, start, end)).bars
    assert tuple(frame.columns) == BAR_COLUMNS
    assert str(frame["ts"].dtype) == "datetime64[us, UTC]"
    for col in ("open", "high", "low", "close", "volume", "vwap"):
        assert frame[col].dtype == "float64", col
    assert str(frame["trades"].dtype) == "Int64"
    assert set(frame["provider"]) == {name} and set(frame["timeframe"]) == {tf} and set(frame["symbol"]) == set(SYMBOLS)
    assert frame.equals(frame.sort_values(["symbol", "ts"]).reset_index(drop=True))
    assert not frame.duplicated(["symbol", "ts"]).any()
    assert frame["ts"].min() >= pd.Timestamp(start, tz="UTC") and frame["ts"].max() < pd.Timestamp(end, tz="UTC")
    assert len(frame) > 0


def test_a_window_without_sessions_is_an_empty_canonical_frame(name: str, factories) -> None:  # type: ignore[no-untyped-def]
    frame = factories[name]().fetch(request(("AAPL",), "1d", "2024-03-30", "2024-04-01")).bars  # a weekend
    assert frame.empty and tuple(frame.columns) == BAR_COLUMNS
    assert str(frame["ts"].dtype) == "datetime64[us, UTC]"


def test_unknown_symbol_is_terminal_and_names_it(name: str, factories) -> None:  # type: ignore[no-untyped-def]
    provider = factories[name]()
    if not provider.capabilities.knows_symbols:  # e.g. flat files: a ticker absent from a file may simply not trade yet
        assert provider.fetch(request(("NOPE",), "1d", "2024-02-01", "2024-03-01")).bars.empty
        return
    with pytest.raises(TerminalProviderError) as info:
        provider.fetch(request(("NOPE",), "1d", "2024-02-01", "2024-03-01"))
    assert info.value.symbols == ("NOPE",) and "NOPE" in str(info.value) and info.value.provider == name


def test_providers_agree_on_the_same_bars(name: str, factories, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    ours = factories[name]().fetch(request(("MSFT",), "1h", "2024-01-01", "2024-04-01")).bars
    reference = factories["synthetic"]().fetch(request(("MSFT",), "1h", "2024-01-01", "2024-04-01")).bars
    cols = ["symbol", "ts", "open", "high", "low", "close", "volume"]
    pd.testing.assert_frame_equal(ours[cols], reference[cols])


def test_probe_reaches_the_vendor_with_the_key(name: str, factories) -> None:  # type: ignore[no-untyped-def]
    """`candleflow doctor`'s one cheap request per provider answers with what it reached."""
    assert factories[name]().probe()


REFUSED_KEY = {"polygon": {"api_key": "not-the-key"}, "databento": {"api_key": "not-the-key"}}


def test_probe_with_a_refused_key_is_terminal(name: str, factories) -> None:  # type: ignore[no-untyped-def]
    if name not in REFUSED_KEY:  # no key (synthetic, csv), or a stand-in that takes any key (moto's S3)
        pytest.skip(f"{name}: no key its stand-in refuses")
    provider = factories[name]()
    refused = get_provider(name, {**provider.settings.model_dump(exclude_unset=True), **REFUSED_KEY[name]})
    with pytest.raises(TerminalProviderError) as info:
        refused.probe()
    assert info.value.http_status == 401


def test_delistings_name_only_the_delisted(name: str, factories) -> None:  # type: ignore[no-untyped-def]
    provider = factories[name]()
    if not provider.capabilities.tells_delistings:
        with pytest.raises(NotImplementedError):
            provider.delistings(["AAPL"])
        return
    if name == "synthetic":
        provider = get_provider("synthetic", {"delisted": {"MSFT": "2024-02-01"}})
        bars = provider.fetch(request(("MSFT",), "1d", "2024-01-25", "2024-02-10")).bars
        assert bars["ts"].max() == pd.Timestamp("2024-02-01", tz="UTC")  # no bars after its last session
    else:  # the polygon stand-in's reference holds an inactive MSFT record (the fixture)
        assert name == "polygon", f"add {name}'s delisted record to this test"
    assert provider.delistings(["AAPL", "MSFT", "ZZZZ"]) == {"MSFT": dt.date(2024, 2, 1)}
