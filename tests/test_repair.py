"""repair_gaps: fetches exactly the chunks covering the sessions `gaps` reports missing (never fetched, failed, or
lost after loading), and nothing else; its dry run says what it would fetch and what a paid vendor charges."""

import datetime as dt
from pathlib import Path

import pytest
import sqlalchemy as sa

from candleflow.errors import IncompleteRunError
from candleflow.sessions import schedule
from cli import main
from flows.backfill import historical_backfill
from flows.repair import repair_gaps
from tests.conftest import count
from tests.polygon_server import KEY, polygon_stand_in
from warehouse.engine import get_engine

pytestmark = [pytest.mark.flows, pytest.mark.usefixtures("prefect_harness")]
D = dt.date


def sessions(start: dt.date, end: dt.date) -> int:
    return len(schedule(start, end))


def delete_bars(url: str, symbol: str, start: str, end: str) -> int:
    with get_engine(url).begin() as conn:
        sql = "DELETE FROM bars WHERE symbol = :s AND ts >= :a AND ts < :b"
        return int(conn.execute(sa.text(sql), {"s": symbol, "a": start, "b": end}).rowcount)


def test_repair_fetches_exactly_the_chunks_covering_missing_sessions(warehouse_url: str, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("MASSIVE_API_KEY", KEY)
    with polygon_stand_in({"AAPL", "MSFT", "NVDA"}) as server:
        common = dict(provider="polygon", provider_options={"base_url": server.url}, warehouse_url=warehouse_url)
        historical_backfill(symbols=["AAPL", "MSFT"], start=D(2024, 1, 1), end=D(2024, 3, 28), timeframe="1h", **common)
        loaded = count(warehouse_url, "SELECT count(*) FROM bars")
        assert delete_bars(warehouse_url, "AAPL", "2024-03-05", "2024-03-07") == 14  # lost behind the ledger's back
        assert delete_bars(warehouse_url, "MSFT", "2024-03-20 15:00", "2024-03-20 17:00") == 2  # thin: not a gap
        assert delete_bars(warehouse_url, "MSFT", "2024-03-21", "2024-03-22") == 7  # polygon sends no bar
        assert delete_bars(warehouse_url, "MSFT", "2024-02-01", "2024-02-03") == 14  # outside the lookback
        repair = dict(symbols=["AAPL", "MSFT", "NVDA"], timeframes=["1h"], lookback_days=30, end=D(2024, 3, 28))
        server.requests.clear()

        plan = repair_gaps(**repair, dry_run=True, **common)
        assert server.requests == []  # a dry run fetches nothing
        nvda = sessions(D(2024, 2, 27), D(2024, 3, 28))  # never fetched: the whole lookback
        assert [c.label() for c in plan.todo] == [
            "polygon:AAPL:1h:2024-03-05..2024-03-06",
            "polygon:MSFT:1h:2024-03-21..2024-03-21",
            "polygon:NVDA:1h:2024-02-27..2024-03-28",
        ]
        assert plan.headline() == (
            f"repair_gaps: dry run, 3 chunks planned, 3 to fetch, 0 held; {2 + 1 + nvda} session(s) to repair"
        )

        done = repair_gaps(**repair, **common)
        assert done.ok and done.counts()["loaded"] == 3
        aggs = [r["path"] for r in server.requests if "/v2/aggs/" in r["path"]]
        assert len(aggs) == 3 and [p.split("/")[4] for p in aggs].count("AAPL") == 1  # one request per chunk
        # February stays lost (outside the lookback), the thin session stays thin, NVDA is new
        assert count(warehouse_url, "SELECT count(*) FROM bars") == loaded - 14 - 2 + 7 * nvda

        server.requests.clear()
        again = repair_gaps(**repair, **common)
        assert again.results == [] and server.requests == []
        assert again.headline() == "repair_gaps: nothing to fetch: no missing sessions"


def test_repair_fetches_failed_chunks_and_leaves_rejected_ones_to_a_person(sqlite_url: str, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("CANDLEFLOW_RETRIES", "0")
    args = dict(start=D(2024, 1, 1), end=D(2024, 6, 28), warehouse_url=sqlite_url)
    flaky = {"transient_failure_rate": 1.0, "transient_failures_per_request": 3, "seed": 1}
    with pytest.raises(IncompleteRunError, match="TransientProviderError"):
        historical_backfill(symbols=["AAPL"], provider_options=flaky, **args)
    with pytest.raises(IncompleteRunError, match="rejected"):
        historical_backfill(symbols=["MSFT"], provider_options={"invalid_chunk_rate": 1.0}, **args)
    repair = dict(symbols=["AAPL", "MSFT"], lookback_days=14, end=D(2024, 6, 28), warehouse_url=sqlite_url)
    plan = repair_gaps(**repair, dry_run=True)
    assert [c.label() for c in plan.todo] == ["synthetic:AAPL:1d:2024-06-14..2024-06-28"]
    done = repair_gaps(**repair)
    assert done.ok and [r.chunk.symbol for r in done.results] == ["AAPL"]
    assert count(sqlite_url, "SELECT count(*) FROM bars") == sessions(D(2024, 6, 14), D(2024, 6, 28))


def test_repair_dry_run_quotes_a_paid_vendor(sqlite_url: str, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from tests.databento_server import KEY as DATABENTO_KEY
    from tests.databento_server import USD_PER_SYMBOL_DAY, databento_stand_in

    with databento_stand_in({"AAPL", "MSFT"}, tmp_path) as gateway:
        monkeypatch.setenv("DATABENTO_API_KEY", DATABENTO_KEY)
        monkeypatch.setenv("CANDLEFLOW_DATABENTO_GATEWAY", gateway.url)
        monkeypatch.setenv("CANDLEFLOW_DATABENTO_DATASET", "XNAS.ITCH")
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(gateway.ca_bundle))
        plan = repair_gaps(
            symbols=["AAPL", "MSFT"],
            timeframes=["1h"],
            provider="databento",
            lookback_days=10,
            end=D(2024, 3, 28),
            dry_run=True,
            warehouse_url=sqlite_url,
        )
        expected = 2 * 11 * USD_PER_SYMBOL_DAY["ohlcv-1h"]  # both symbols, 2024-03-18 up to 03-29, in one request
        assert plan.cost_usd == pytest.approx(expected)
        assert plan.headline().endswith(f"; vendor quote ${expected:,.2f}")
        assert gateway.paths("get_range") == [] and len(gateway.paths("get_cost")) == 1


def test_repair_from_the_command_line(tmp_path: Path, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)
    args = ["repair", "--symbols", "AAPL", "--timeframe", "1d", "--lookback-days", "10", "--end", "2024-03-28"]
    assert main([*args, "--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [
        "repair_gaps: dry run, 1 chunks planned, 1 to fetch, 0 held; 9 session(s) to repair",
        "  would fetch synthetic:AAPL:1d:2024-03-18..2024-03-28",
    ]
    assert main(args) == 0
    assert "1 chunks run (1 loaded" in capsys.readouterr().out
    assert main(args) == 0
    assert capsys.readouterr().out.strip() == "repair_gaps: nothing to fetch: no missing sessions"
    assert main(["repair", "--symbols", "AAPL", "--lookback-days", "0"]) == 2
    assert capsys.readouterr().err.strip() == "candleflow: error: --lookback-days 0 must be at least 1"
