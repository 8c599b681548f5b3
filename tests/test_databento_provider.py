"""databento: the real `databento` client against a local https stand-in gateway, and recorded DBN files."""

import datetime as dt
from collections import deque
from collections.abc import Iterator
from pathlib import Path

import databento
import pandas as pd
import pytest

from candleflow.errors import BadInputError, BudgetExceededError, IncompleteRunError
from candleflow.model import Chunk, LedgerStatus
from candleflow.timeframes import get_timeframe
from expectations import validate_bars
from flows.backfill import historical_backfill
from providers import get_provider
from providers.base import FetchRequest
from providers.errors import TerminalProviderError, TransientProviderError
from tests.conftest import count
from tests.databento_server import KEY, RECORDED_DIR, USD_PER_SYMBOL_DAY, DatabentoStandIn, databento_stand_in
from tests.providers_support import synthetic_bars
from warehouse.engine import get_engine
from warehouse.queries import has_schema, read_ledger

D = dt.date
OPTION = "AAPL  250221C00250000"


@pytest.fixture
def gateway(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[DatabentoStandIn]:
    with databento_stand_in({"AAPL", "MSFT"}, tmp_path) as server:
        monkeypatch.setenv("DATABENTO_API_KEY", KEY)
        monkeypatch.setenv("CANDLEFLOW_DATABENTO_GATEWAY", server.url)
        monkeypatch.setenv("CANDLEFLOW_DATABENTO_DATASET", "XNAS.ITCH")
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(server.ca_bundle))
        yield server


def fetch(symbols: tuple[str, ...], tf: str, start: str, end: str, **options: object) -> pd.DataFrame:
    request = FetchRequest(symbols, get_timeframe(tf), pd.Timestamp(start, tz="UTC"), pd.Timestamp(end, tz="UTC"))
    return get_provider("databento", options).fetch(request).bars


@pytest.mark.parametrize("tf", ["1m", "1h", "1d"])
def test_recorded_bars_arrive_as_recorded(gateway: DatabentoStandIn, tf: str) -> None:
    frame = fetch(("NVDA",), tf, "2020-12-28", "2020-12-29")
    recorded = databento.DBNStore.from_file(RECORDED_DIR / "XNAS.ITCH" / f"test_data.ohlcv-{tf}.dbn.zst").to_df()
    assert frame["ts"].tolist() == recorded.index.tolist()
    assert (
        frame[["open", "high", "low", "close"]].to_numpy().tolist()
        == recorded[["open", "high", "low", "close"]].to_numpy().tolist()
    )
    assert frame["volume"].tolist() == recorded["volume"].astype(float).tolist()
    chunk = Chunk("databento", "NVDA", tf, pd.Timestamp("2020-12-01", tz="UTC"), pd.Timestamp("2021-01-01", tz="UTC"))
    assert validate_bars([(chunk, frame)], hours="extended").ok  # 04:05 New York: pre-market


def test_many_venues_become_one_bar_per_minute(gateway: DatabentoStandIn) -> None:
    raw = databento.DBNStore.from_file(RECORDED_DIR / "OPRA.PILLAR" / "test_data.ohlcv-1m.dbn.zst").to_df()
    assert raw.index.duplicated().any()  # the recorded file has several venues at one timestamp
    frame = fetch((OPTION,), "1m", "2025-02-20", "2025-02-21", dataset="OPRA.PILLAR")
    assert not frame.duplicated(["symbol", "ts"]).any()
    for ts, venues in raw.groupby(level=0):
        (bar,) = frame[frame["ts"] == ts].itertuples()
        leader = venues.sort_values(["volume", "publisher_id"], ascending=[False, True]).iloc[0]
        assert (bar.high, bar.low, bar.volume) == (venues["high"].max(), venues["low"].min(), venues["volume"].sum())
        assert (bar.open, bar.close) == (leader["open"], leader["close"])
    chunk = Chunk("databento", OPTION, "1m", pd.Timestamp("2025-02-01", tz="UTC"), pd.Timestamp("2025-03-01", tz="UTC"))
    assert validate_bars([(chunk, frame)]).ok
    one_venue = fetch((OPTION,), "1m", "2025-02-20", "2025-02-21", dataset="OPRA.PILLAR", publisher_id=31)
    expected = raw[raw["publisher_id"] == 31]
    assert one_venue["close"].tolist() == expected["close"].tolist()


def test_five_minute_bars_are_aggregated_from_minutes(gateway: DatabentoStandIn) -> None:
    frame = fetch(("MSFT",), "5m", "2024-03-08", "2024-03-12")
    expected = synthetic_bars("MSFT", "5m", pd.Timestamp("2024-03-08", tz="UTC"), pd.Timestamp("2024-03-12", tz="UTC"))
    cols = ["ts", "open", "high", "low", "close", "volume"]
    pd.testing.assert_frame_equal(frame[cols], expected[cols])
    assert {r["form"]["schema"] for r in gateway.paths("get_range")} == {"ohlcv-1m"}


def test_an_unknown_symbol_among_known_ones_is_named(gateway: DatabentoStandIn) -> None:
    request = FetchRequest(
        ("AAPL", "NOPE"),
        get_timeframe("1d"),
        pd.Timestamp("2024-01-02", tz="UTC"),
        pd.Timestamp("2024-01-10", tz="UTC"),
    )
    result = get_provider("databento").fetch(request)
    assert set(result.bars["symbol"]) == {"AAPL"} and result.unknown_symbols == ("NOPE",)


def test_a_refused_key_is_terminal_and_never_shown(gateway: DatabentoStandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    wrong = "db-wrong-key-4411aa9c0d"
    monkeypatch.setenv("DATABENTO_API_KEY", wrong)
    with pytest.raises(TerminalProviderError, match="DATABENTO_API_KEY") as info:
        fetch(("AAPL",), "1d", "2024-01-02", "2024-01-10")
    assert info.value.http_status == 401 and wrong not in str(info.value) and KEY not in str(info.value)


@pytest.mark.parametrize(("status", "retry_after"), [(429, 3.0), (500, None), (503, None)])
def test_rate_limits_and_server_errors_are_transient(
    gateway: DatabentoStandIn, status: int, retry_after: float | None
) -> None:
    gateway.scripted.append((status, {"Retry-After": "3"} if retry_after else {}))
    with pytest.raises(TransientProviderError) as info:
        fetch(("AAPL",), "1d", "2024-01-02", "2024-01-10")
    assert info.value.http_status == status and info.value.retry_after == retry_after
    assert len(gateway.requests) == 1  # the client did not retry by itself


def test_a_dataset_is_required(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CANDLEFLOW_DATABENTO_DATASET", raising=False)
    with pytest.raises(BadInputError, match="CANDLEFLOW_DATABENTO_DATASET"):
        get_provider("databento")
    with pytest.raises(BadInputError, match="stype_in"):
        get_provider("databento", {"dataset": "GLBX.MDP3", "stype_in": "parent"})


@pytest.mark.flows
@pytest.mark.usefixtures("prefect_harness")
def test_the_quote_comes_first_and_a_budget_refuses_before_any_download(
    gateway: DatabentoStandIn, sqlite_url: str
) -> None:
    args = dict(symbols=["AAPL", "MSFT"], start=D(2024, 1, 1), end=D(2024, 3, 31), timeframe="1h", provider="databento")
    plan = historical_backfill(**args, warehouse_url=sqlite_url, dry_run=True)
    expected = 2 * 91 * USD_PER_SYMBOL_DAY["ohlcv-1h"]  # the stand-in's price list: per symbol and day
    assert plan.cost_usd == pytest.approx(expected) and f"vendor quote ${expected:,.2f}" in plan.headline()
    with pytest.raises(BudgetExceededError, match=r"max_cost_usd \$5.00"):
        historical_backfill(**args, warehouse_url=sqlite_url, max_cost_usd=5.0)
    assert gateway.paths("get_range") == [] and len(gateway.paths("get_cost")) == 2
    assert not has_schema(get_engine(sqlite_url))  # refused before the warehouse was touched


@pytest.mark.flows
@pytest.mark.usefixtures("prefect_harness")
def test_backfill_fetches_symbols_together_and_records_them_apart(
    gateway: DatabentoStandIn, warehouse_url: str
) -> None:
    for endpoint in ("metadata.get_cost", "timeseries.get_range"):  # the quote, then one download: rate limited
        gateway.scripted_for[endpoint] = deque([(429, {"Retry-After": "1"})])
    with pytest.raises(IncompleteRunError) as info:
        historical_backfill(
            symbols=["AAPL", "MSFT", "NOPE"],
            start=D(2024, 1, 1),
            end=D(2024, 6, 30),
            timeframe="1h",
            provider="databento",
            warehouse_url=warehouse_url,
            max_cost_usd=100.0,
        )
    summary = info.value.summary
    assert summary.counts() == {"loaded": 4, "empty": 0, "partial": 0, "rejected": 0, "failed": 2}
    calls = gateway.paths("get_range")
    assert [sorted(c["form"]["symbols"].split(",")) for c in calls] == [["AAPL", "MSFT", "NOPE"]] * 3  # 2 quarters
    for endpoint in ("get_cost", "get_range"):  # each retry waited for Retry-After
        seen = gateway.paths(endpoint)
        (limited,) = [c for c in seen if c.get("scripted")]
        retry = [c for c in seen if not c.get("scripted") and c["form"]["start"] == limited["form"]["start"]]
        assert retry and retry[0]["at"] - limited["at"] >= 1.0
    expected = sum(
        len(synthetic_bars(s, "1h", pd.Timestamp("2024-01-01", tz="UTC"), pd.Timestamp("2024-07-01", tz="UTC")))
        for s in ("AAPL", "MSFT")
    )
    assert count(warehouse_url, "SELECT count(*) FROM bars") == expected
    ledger = read_ledger(get_engine(warehouse_url), "databento")
    assert {(e.symbol, e.status) for e in ledger} == {
        ("AAPL", LedgerStatus.LOADED),
        ("MSFT", LedgerStatus.LOADED),
        ("NOPE", LedgerStatus.FAILED),
    }
    assert {e.adjustment for e in ledger if e.status is LedgerStatus.LOADED} == {"raw"}
    assert all("unknown symbol NOPE" in r.error for r in summary.problems())


@pytest.mark.flows
@pytest.mark.usefixtures("prefect_harness")
def test_every_symbol_of_the_dataset_comes_as_one_request_per_session_and_a_rerun_fetches_nothing(
    gateway: DatabentoStandIn, warehouse_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from cli import main

    args = dict(symbols=["ALL"], start=D(2024, 3, 4), end=D(2024, 3, 8), timeframe="1d", provider="databento")
    plan = historical_backfill(**args, warehouse_url=warehouse_url, dry_run=True)
    expected = 5 * 2 * USD_PER_SYMBOL_DAY["ohlcv-1d"]  # five sessions of the stand-in's two instruments
    assert plan.cost_usd == pytest.approx(expected)
    summary = historical_backfill(**args, warehouse_url=warehouse_url, max_cost_usd=1.0)
    assert summary.counts()["loaded"] == 5 and summary.bars_written == 2 * 5
    calls = gateway.paths("get_range")
    assert [c["form"]["symbols"] for c in calls] == ["ALL_SYMBOLS"] * 5  # one request per session
    assert count(warehouse_url, "SELECT count(DISTINCT symbol) FROM bars WHERE provider = 'databento'") == 2
    ledger = read_ledger(get_engine(warehouse_url), "databento")
    assert {(e.symbol, e.status) for e in ledger} == {("*", LedgerStatus.LOADED)} and len(ledger) == 5
    again = historical_backfill(**args, warehouse_url=warehouse_url, max_cost_usd=1.0)
    assert again.bars_written == 0 and len(gateway.paths("get_range")) == 5  # held: nothing asked again
    argv = ["gaps", "--provider", "databento", "--symbols", "ALL", "--start", "2024-03-04", "--end", "2024-03-08"]
    assert main([*argv, "--warehouse", warehouse_url]) == 0
    assert capsys.readouterr().out.startswith("0 session(s) with no bars out of 5 expected\n(ALL: a session is held")


CONTRACTS = {"ES.FUT": ["ESH4", "ESM4", "ESU4"], "NQ.FUT": ["NQH4", "NQM4"]}


@pytest.fixture
def futures(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[DatabentoStandIn]:
    contracts = {c for members in CONTRACTS.values() for c in members}
    with databento_stand_in(contracts, tmp_path, CONTRACTS) as server:
        monkeypatch.setenv("DATABENTO_API_KEY", KEY)
        monkeypatch.setenv("CANDLEFLOW_DATABENTO_GATEWAY", server.url)
        monkeypatch.setenv("CANDLEFLOW_DATABENTO_DATASET", "GLBX.MDP3")
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(server.ca_bundle))
        yield server


def test_a_parent_symbol_becomes_a_universe_of_its_contracts_that_a_backfill_takes(
    futures: DatabentoStandIn, warehouse_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from cli import main

    monkeypatch.setenv("CANDLEFLOW_WAREHOUSE_URL", warehouse_url)
    refresh = ["universe", "refresh", "index-futures", "--provider", "databento", "--parent", "ES.FUT"]
    assert main([*refresh, "--parent", "NQ.FUT"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("universe index-futures: 5 tickers from databento parent=ES.FUT,NQ.FUT active only (new)")
    calls = [c["form"] for c in futures.paths("symbology.resolve")]
    assert [(c["stype_in"], c["stype_out"], c["symbols"]) for c in calls] == [
        ("parent", "instrument_id", "ES.FUT,NQ.FUT"),
        ("instrument_id", "raw_symbol", "5000,5001,5002,5003,5004"),
    ]
    assert main(["universe", "show", "index-futures"]) == 0
    assert capsys.readouterr().out.splitlines()[1:] == ["ESH4", "ESM4", "ESU4", "NQH4", "NQM4"]
    backfill = ["backfill", "--provider", "databento", "--symbols", "universe:index-futures", "--timeframe", "1d"]
    assert main([*backfill, "--start", "2024-03-04", "--end", "2024-03-08", "--max-cost-usd", "5"]) == 0
    assert count(warehouse_url, "SELECT count(DISTINCT symbol) FROM bars WHERE provider = 'databento'") == 5


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--parent", "CL.FUT"], "parent symbol(s) CL.FUT resolve to no contract in GLBX.MDP3 from "),
        (["--parent", "es.fut"], "parent symbol 'es.fut': use a futures product's root and .FUT in capitals"),
        ([], "provider databento lists the contracts of futures parents: give --parent ES.FUT"),
    ],
)
def test_a_parent_that_resolves_to_nothing_or_is_malformed_exits_2_naming_it(
    futures: DatabentoStandIn, warehouse_url: str, argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from cli import main

    command = ["universe", "refresh", "cl", "--provider", "databento", "--warehouse", warehouse_url, *argv]
    assert main(command) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"candleflow: error: {message}") and len(err.splitlines()) == 1, err
    assert main(["universe", "list", "--warehouse", warehouse_url]) == 0
    assert "no universes kept" in capsys.readouterr().out


def test_providers_without_parent_symbology_refuse_one(monkeypatch: pytest.MonkeyPatch) -> None:
    from candleflow.universes import ReferenceQuery

    with pytest.raises(BadInputError, match=r"provider synthetic has no parent symbols \(ES.FUT\): resolve futures"):
        get_provider("synthetic").list_symbols(ReferenceQuery(parents=("ES.FUT",)))
