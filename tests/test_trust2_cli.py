"""Issue #17 (trust, second round), the command line's items: each reproduced first through `candleflow.cli.main`
in-process, against a real SQLite warehouse and the session's Prefect server."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from candleflow.cli import main
from tests.conftest import count

pytestmark = [pytest.mark.flows, pytest.mark.usefixtures("prefect_harness")]


def bars_of(url: str, timeframe: str) -> int:
    return count(url, f"SELECT count(*) FROM bars WHERE timeframe = '{timeframe}'")


def test_backfill_runs_every_timeframe_given(sqlite_url: str, tmp_path: Path, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)
    argv = ["backfill", "--symbols", "AAPL", "--timeframe", "1d,1h", "--start", "2024-01-02", "--end", "2024-01-05"]
    assert main([*argv, "--warehouse", sqlite_url]) == 0
    assert bars_of(sqlite_url, "1d") == 4
    assert bars_of(sqlite_url, "1h") == 4 * 7  # 09:30..15:30 New York, one bar an hour
    out = capsys.readouterr().out
    assert out.count("historical_backfill:") == 1  # one run, one summary


def test_the_backfill_form_offers_several_timeframes_beside_the_one() -> None:
    from prefect.utilities.callables import parameter_schema

    from flows.backfill import historical_backfill

    props = parameter_schema(historical_backfill.fn).model_dump_for_openapi()["properties"]
    assert props["timeframe"]["enum"] == ["1m", "5m", "15m", "1h", "1d"] and props["timeframe"]["default"] == "1d"
    (listed, _none) = props["timeframes"]["anyOf"]
    assert listed["items"]["enum"] == ["1m", "5m", "15m", "1h", "1d"]
    assert "replace timeframe" in props["timeframes"]["description"]


def minute_file(directory: Path, stamps: pd.DatetimeIndex, symbol: str = "AAPL", folder: str = "1m") -> Path:
    """A csv of intraday bars at `stamps` (UTC), valid prices, in DIR/FOLDER/SYMBOL.csv."""
    (directory / folder).mkdir(parents=True, exist_ok=True)
    price = 100 + np.arange(len(stamps)) * 0.01
    pd.DataFrame(
        {
            "timestamp": stamps.strftime("%Y-%m-%d %H:%M:%S"),
            "open": price,
            "high": price + 0.05,
            "low": price - 0.05,
            "close": price + 0.01,
            "volume": 1000,
        }
    ).to_csv(directory / folder / f"{symbol}.csv", index=False)
    return directory


def test_gaps_finds_a_missing_regular_bar_that_a_post_market_bar_would_hide(
    warehouse_url: str, tmp_path: Path, monkeypatch, capsys
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)
    regular = pd.date_range("2024-01-03 14:30", "2024-01-03 20:59", freq="1min", tz="UTC")  # 09:30-15:59 New York
    assert len(regular) == 390
    stamps = regular.drop(pd.Timestamp("2024-01-03 15:00", tz="UTC")).append(
        pd.DatetimeIndex([pd.Timestamp("2024-01-03 21:05", tz="UTC")])  # 16:05 New York: post-market
    )
    directory = minute_file(tmp_path / "files", stamps)
    one_day = ["--symbols", "AAPL", "--timeframe", "1m", "--start", "2024-01-03", "--end", "2024-01-03"]
    backfill = ["backfill", "--provider", "csv", *one_day, "--warehouse", warehouse_url]
    assert main([*backfill, "--option", f"directory={directory}", "--option", "hours=extended"]) == 0
    assert bars_of(warehouse_url, "1m") == 390  # 389 regular and one post-market
    capsys.readouterr()
    assert main(["gaps", "--provider", "csv", *one_day, "--warehouse", warehouse_url]) == 1
    out = capsys.readouterr().out
    assert "2024-01-03" in out and "389/390" in out, out
    assert main(["gaps", "--provider", "csv", *one_day, "--warehouse", warehouse_url, "--json"]) == 1
    (gap,) = json.loads(capsys.readouterr().out)
    assert (gap["session"], gap["state"], gap["present"], gap["expected"]) == ("2024-01-03", "partial", 389, 390)
    assert main(["status", "--provider", "csv", "--warehouse", warehouse_url, "--json"]) == 0
    (series,) = json.loads(capsys.readouterr().out)
    assert (series["sessions"], series["missing"], series["partial"]) == (1, 0, 1)


def delete_a_middle_bar(url: str) -> None:
    import sqlalchemy as sa

    from warehouse.engine import get_engine

    with get_engine(url).begin() as conn:
        n = conn.execute(sa.text("SELECT count(*) FROM bars")).scalar_one()
        middle = conn.execute(sa.text("SELECT ts FROM bars ORDER BY ts LIMIT 1 OFFSET :n"), {"n": n // 2}).scalar_one()
        conn.execute(sa.text("DELETE FROM bars WHERE ts = :ts"), {"ts": middle})


@pytest.mark.parametrize(("calendar", "timeframe"), [("XNZE", "1m"), ("CME_Equity", "15m"), ("XLON", "5m")])
def test_gaps_checks_every_regular_interval_on_calendars_with_odd_hours(
    calendar: str, timeframe: str, sqlite_url: str, tmp_path: Path, monkeypatch, capsys
) -> None:  # type: ignore[no-untyped-def]
    """Wellington's 16:45 close, CME's sessions opening the evening before (and its daily halt), London's 16:30
    close: whole sessions are complete; a session that lost one bar is partial."""
    monkeypatch.chdir(tmp_path)
    where = ["--calendar", calendar, "--warehouse", sqlite_url]
    backfill = ["--start", "2024-03-04", "--end", "2024-03-08", "--option", f"calendar={calendar}"]  # synthetic's
    assert main(["backfill", "--symbols", "AAPL", "--timeframe", timeframe, *backfill, *where]) == 0
    capsys.readouterr()
    series = ["--symbols", "AAPL", "--timeframe", timeframe, "--start", "2024-03-05", "--end", "2024-03-07", *where]
    assert main(["gaps", *series]) == 0, capsys.readouterr().out
    capsys.readouterr()
    delete_a_middle_bar(sqlite_url)
    assert main(["gaps", *series, "--json"]) == 1
    (gap,) = json.loads(capsys.readouterr().out)
    assert gap["state"] == "partial" and gap["present"] == gap["expected"] - 1


def test_gaps_checks_every_regular_interval_around_a_lunch_break(
    sqlite_url: str, tmp_path: Path, monkeypatch, capsys
) -> None:  # type: ignore[no-untyped-def]
    from candleflow.sessions import schedule, sessions_of
    from candleflow.timeframes import get_timeframe

    monkeypatch.chdir(tmp_path)
    days = schedule(dt.date(2024, 3, 5), dt.date(2024, 3, 7), "XHKG")
    assert days["break_start"].notna().all()  # 12:00-13:00 Hong Kong
    grid = pd.date_range(days["open"].iloc[0], days["close"].iloc[-1], freq="5min", inclusive="left")
    stamps = grid[sessions_of(pd.Series(grid), get_timeframe("5m"), "XHKG").notna().to_numpy()]
    directory = minute_file(tmp_path / "files", pd.DatetimeIndex(stamps), folder="5m")
    series = ["--symbols", "AAPL", "--timeframe", "5m", "--start", "2024-03-05", "--end", "2024-03-07"]
    where = ["--provider", "csv", "--calendar", "XHKG", "--warehouse", sqlite_url]
    assert main(["backfill", *series, *where, "--option", f"directory={directory}"]) == 0
    capsys.readouterr()
    assert main(["gaps", *series, *where]) == 0, capsys.readouterr().out
    capsys.readouterr()
    delete_a_middle_bar(sqlite_url)
    assert main(["gaps", *series, *where, "--json"]) == 1
    (gap,) = json.loads(capsys.readouterr().out)
    assert (gap["session"], gap["state"], gap["present"], gap["expected"]) == ("2024-03-06", "partial", 65, 66)
