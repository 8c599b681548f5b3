"""Polygon's grouped daily bars (issue #19): one request per session answers every ticker, through the real
`massive` client against the local stand-in, which serves the vendor's recorded grouped answer byte for byte."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from candleflow.model import Chunk, LedgerStatus
from candleflow.planning import group_chunks
from candleflow.timeframes import get_timeframe
from ingest import Attempt, run_batch
from providers import get_provider
from providers.base import FetchRequest, FetchResult
from tests.polygon_server import KEY, PolygonStandIn, polygon_stand_in
from tests.test_ingest_engine import CountingGates
from warehouse.engine import get_engine
from warehouse.queries import read_ledger
from warehouse.schema import ensure_schema

SYMBOLS = ("AAA", "BBB", "CCC")


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[PolygonStandIn]:
    with polygon_stand_in({"GIK", "AAPL", *SYMBOLS}, page_size=5000) as srv:
        monkeypatch.setenv("MASSIVE_API_KEY", KEY)
        monkeypatch.setenv("CANDLEFLOW_POLYGON_BASE_URL", srv.url)
        yield srv


def day(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


def fetch(
    symbols: tuple[str, ...], start: str, end: str, pace: list[int] | None = None, **options: object
) -> FetchResult:
    request = FetchRequest(
        symbols, get_timeframe("1d"), day(start), day(end), pace=None if pace is None else pace.append
    )
    return get_provider("polygon", options).fetch(request)


def paths(server: PolygonStandIn) -> list[str]:
    return [r["path"].split("?")[0] for r in server.requests]


def test_the_vendors_recorded_grouped_answer_becomes_session_dated_bars(server: PolygonStandIn) -> None:
    result = fetch(("GIK", "AAPL"), "2020-10-14", "2020-10-15", grouped_daily_min_symbols=2)
    bars = result.bars
    assert paths(server) == ["/v2/aggs/grouped/locale/us/market/stocks/2020-10-14", "/v3/reference/tickers/AAPL"]
    assert bars["symbol"].tolist() == ["GIK"]  # AAPL is known to the vendor, and had no bar in the answer
    assert bars["ts"].tolist() == [day("2020-10-14")]  # `t` was 16:00 New York: the session's date at 00:00 UTC
    row = bars.iloc[0]
    assert [row.open, row.high, row.low, row.close, row.volume, row.vwap, row.trades] == [
        9.99,
        10.02,
        9.9,
        10.02,
        895345,
        9.9979,
        96,
    ]
    assert result.unknown_symbols == ()


def test_a_ticker_the_vendor_does_not_know_is_reported_and_the_others_load(server: PolygonStandIn) -> None:
    result = fetch(("GIK", "NOPE"), "2020-10-14", "2020-10-15", grouped_daily_min_symbols=2)
    assert result.unknown_symbols == ("NOPE",) and result.bars["symbol"].tolist() == ["GIK"]


def test_grouped_and_per_symbol_requests_give_the_same_bars_and_each_request_takes_a_slot(
    server: PolygonStandIn,
) -> None:
    grouped_slots: list[int] = []
    grouped = fetch(SYMBOLS, "2024-03-04", "2024-03-06", grouped_slots, grouped_daily_min_symbols=2).bars
    asked = paths(server)
    assert asked == [f"/v2/aggs/grouped/locale/us/market/stocks/2024-03-0{d}" for d in (4, 5)]
    assert 1 + sum(grouped_slots) == len(asked)  # the caller took the first slot
    server.requests.clear()
    single_slots: list[int] = []
    single = fetch(SYMBOLS, "2024-03-04", "2024-03-06", single_slots, grouped_daily_min_symbols=1000).bars
    assert [p.split("/")[4] for p in paths(server)] == list(SYMBOLS) and 1 + sum(single_slots) == 3
    ordered = grouped.sort_values(["symbol", "ts"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(ordered, single.sort_values(["symbol", "ts"]).reset_index(drop=True))
    assert len(ordered) == 6


@pytest.mark.parametrize(
    ("timeframe", "symbols", "end", "grouped"),
    [
        ("1d", 60, "2024-03-09", True),  # 60 symbols, 5 sessions: 5 requests instead of 60
        ("1d", 40, "2024-03-09", False),  # under the threshold (50)
        ("1d", 60, "2029-03-04", False),  # 5 years of sessions: one request per symbol is fewer
        ("1h", 60, "2024-03-09", False),  # grouped answers are daily bars
    ],
)
def test_the_plan_groups_a_window_s_chunks_only_when_grouped_daily_asks_less(
    timeframe: str, symbols: int, end: str, grouped: bool
) -> None:
    provider = get_provider("polygon")
    chunks = [Chunk("polygon", f"S{i:03d}", timeframe, day("2024-03-04"), day(end)) for i in range(symbols)]
    groups = group_chunks(chunks, provider.symbols_per_request)
    assert [len(g) for g in groups] == ([symbols] if grouped else [1] * symbols)


def test_a_batch_of_grouped_chunks_loads_each_symbol_and_counts_every_request(
    server: PolygonStandIn, sqlite_url: str
) -> None:
    engine: sa.Engine = get_engine(sqlite_url)
    ensure_schema(engine)
    provider = get_provider("polygon", {"grouped_daily_min_symbols": 2})
    chunks = [Chunk("polygon", s, "1d", day("2024-03-04"), day("2024-03-06")) for s in (*SYMBOLS, "NOPE")]
    gates = CountingGates(burst=1)
    outcome = run_batch(chunks, provider, engine, "reject", attempt=Attempt("run-1"), gates=gates)
    statuses = {r.chunk.symbol: r.status for r in outcome.results}
    assert statuses == {**dict.fromkeys(SYMBOLS, LedgerStatus.LOADED), "NOPE": LedgerStatus.FAILED}
    assert sum(gates.taken) == len(server.requests) == 3  # 2 sessions, 1 lookup of the ticker no answer held
    assert {e.symbol: e.rows for e in read_ledger(engine) if e.status == LedgerStatus.LOADED} == dict.fromkeys(
        SYMBOLS, 2
    )


def test_a_dry_run_says_the_plan_asks_once_per_session(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MASSIVE_API_KEY", KEY)
    argv = ["backfill", "--provider", "polygon", "--symbols", ",".join(SYMBOLS), "--timeframe", "1d"]
    argv += ["--start", "2024-03-04", "--end", "2024-03-05", "--option", "grouped_daily_min_symbols=2", "--dry-run"]
    assert main(argv) == 0
    assert capsys.readouterr().out.splitlines()[0] == (
        "historical_backfill: dry run, 3 chunks planned, 3 to fetch, 0 held; 3 symbols' daily bars in 2 "
        "grouped-daily requests (one per session) instead of one per symbol"
    )


@pytest.mark.flows
@pytest.mark.usefixtures("prefect_harness")
def test_a_backfill_of_many_symbols_asks_once_per_session_through_the_flow(
    server: PolygonStandIn, sqlite_url: str
) -> None:
    """The whole path under Prefect: the flow's batches keep a window's grouped chunks in one task, whose one
    grouped request per session loads every symbol; a second run holds them all."""
    from flows.backfill import historical_backfill

    args = dict(
        symbols=list(SYMBOLS),
        start=pd.Timestamp("2024-03-04").date(),
        end=pd.Timestamp("2024-03-05").date(),
        provider="polygon",
        warehouse_url=sqlite_url,
        provider_options={"grouped_daily_min_symbols": 2},
    )
    summary = historical_backfill(**args)
    assert summary.ok and summary.counts()["loaded"] == 3 and summary.bars_written == 6
    assert [p.rsplit("/", 1)[-1] for p in paths(server)] == ["2024-03-04", "2024-03-05"]
    assert historical_backfill(**args).results == []


def test_the_per_symbol_path_s_ticker_lookup_takes_its_own_slot(server: PolygonStandIn) -> None:
    from providers.errors import TerminalProviderError

    slots: list[int] = []
    with pytest.raises(TerminalProviderError, match="unknown ticker NOPE"):
        fetch(("AAA", "NOPE"), "2024-03-04", "2024-03-06", slots, grouped_daily_min_symbols=1000)
    assert paths(server)[-1] == "/v3/reference/tickers/NOPE" and 1 + sum(slots) == len(server.requests) == 3
