"""Issue #17 (trust, second round), the command line's items: each reproduced first through `cli.main`
in-process, against a real SQLite warehouse and the session's Prefect server."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from cli import main
from tests.conftest import count
from warehouse.engine import get_engine

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
    listed = props["timeframes"]  # a plain list (not "list or None", which the form shows as "type None")
    assert (listed["type"], listed["default"]) == ("array", [])
    assert listed["items"]["enum"] == ["1m", "5m", "15m", "1h", "1d"]
    assert "replace timeframe" in listed["description"]


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


def minute_file_with_closing_prints(directory: Path) -> Path:
    """Three winter sessions of 1m bars, 09:30-15:59 New York, each followed by a 16:00 closing print (21:00 UTC),
    as real S&P 500 minute files have."""
    days = [pd.Timestamp(d, tz="UTC") for d in ("2024-01-02", "2024-01-03", "2024-01-04")]
    stamps = pd.DatetimeIndex([])
    for day in days:
        regular = pd.date_range(day + pd.Timedelta("14:30:00"), day + pd.Timedelta("20:59:00"), freq="1min")
        stamps = stamps.append(regular).append(pd.DatetimeIndex([day + pd.Timedelta("21:00:00")]))
    return minute_file(directory, stamps)


CLOSING_PRINTS = ["--symbols", "AAPL", "--timeframe", "1m", "--start", "2024-01-02", "--end", "2024-01-04"]


def test_a_rejection_names_the_rows_their_local_time_the_hours_and_the_ways_out(
    sqlite_url: str, tmp_path: Path, monkeypatch, capsys
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)
    directory = minute_file_with_closing_prints(tmp_path / "files")
    argv = ["backfill", "--provider", "csv", *CLOSING_PRINTS, "--warehouse", sqlite_url]
    assert main([*argv, "--option", f"directory={directory}"]) == 1
    out = capsys.readouterr().out
    (line,) = [line for line in out.splitlines() if "REJECTED" in line]  # one line per chunk
    assert "ts inside a session of the exchange calendar" in line  # the expectation's name, as in the suite
    assert "3 row(s)" in line
    assert "2024-01-02 16:00, 2024-01-03 16:00, 2024-01-04 16:00 America/New_York" in line, line
    assert "regular hours 09:30-16:00 America/New_York" in line, line
    for way_out in ("--on-invalid quarantine_rows", "--option hours=extended", "--calendar NAME"):
        assert way_out in line, line
    # the ledger keeps the same explanation for whoever reads it later (gaps points there)
    with get_engine(sqlite_url).connect() as conn:
        (error,) = conn.execute(sa.text("SELECT error FROM ingest_ledger")).scalars()
    assert "16:00 America/New_York" in error and "Ways out:" in error, error
    # the named way out works: the closing prints are pre- and post-market hours' bars
    assert main([*argv, "--option", f"directory={directory}", "--option", "hours=extended"]) == 0
    assert bars_of(sqlite_url, "1m") == 3 * 391


def test_a_rejection_by_a_rule_other_than_the_session_names_its_rows_and_the_quarantine_option(
    sqlite_url: str, tmp_path: Path, monkeypatch, capsys
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)
    stamps = pd.date_range("2024-01-02 14:30", "2024-01-02 20:59", freq="1min", tz="UTC")
    directory = minute_file(tmp_path / "files", stamps)
    path = directory / "1m" / "AAPL.csv"
    frame = pd.read_csv(path)
    frame.loc[5, "high"] = frame.loc[5, "low"] - 1  # 09:35 New York: high below low
    frame.to_csv(path, index=False)
    argv = ["backfill", "--provider", "csv", *CLOSING_PRINTS[:4], "--start", "2024-01-02", "--end", "2024-01-02"]
    assert main([*argv, "--warehouse", sqlite_url, "--option", f"directory={directory}"]) == 1
    (line,) = [line for line in capsys.readouterr().out.splitlines() if "REJECTED" in line]
    assert "high >= low: 1 row(s) at 2024-01-02 09:35 America/New_York" in line, line
    assert "--on-invalid quarantine_rows" in line and "hours=extended" not in line, line


def test_quarantine_reasons_are_those_of_the_latest_run(sqlite_url: str, tmp_path: Path, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)
    directory = minute_file_with_closing_prints(tmp_path / "files")
    argv = ["backfill", "--provider", "csv", *CLOSING_PRINTS, "--warehouse", sqlite_url]
    argv += ["--option", f"directory={directory}", "--mode", "all"]
    assert main([*argv, "--calendar", "XHKG"]) == 1  # Hong Kong's hours: every row is outside them
    held = "SELECT count(*) FROM quarantine"
    assert count(sqlite_url, held) == 3 * 391
    first_run = "SELECT count(DISTINCT flow_run_id) FROM quarantine"
    assert count(sqlite_url, first_run) == 1
    assert main(argv) == 1  # New York's: only the closing prints are
    assert count(sqlite_url, held) == 3 * 391  # each row held once
    session_rule = "failed_expectations LIKE 'ts inside a session of the exchange calendar%'"
    assert count(sqlite_url, f"SELECT count(*) FROM quarantine WHERE {session_rule}") == 3
    chunk_rule = "failed_expectations LIKE 'chunk rejected: ts inside a session%'"
    assert count(sqlite_url, f"SELECT count(*) FROM quarantine WHERE {chunk_rule}") == 3 * 390
    assert count(sqlite_url, first_run) == 1  # flow_run_id: the run that first saw them


def flow_run_of(state: Any) -> Any:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(state.state_details.flow_run_id)


def artifacts_of(flow_run_id: Any) -> dict[str, Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    return {a.key or a.type or "": a for a in found}


def test_update_and_repair_runs_say_what_they_are_in_their_names(sqlite_url: str) -> None:
    from flows.backfill import historical_backfill
    from flows.incremental import incremental_update
    from flows.repair import repair_gaps

    common: dict[str, Any] = {"symbols": ["AAPL", "MSFT"], "warehouse_url": sqlite_url}
    end = dt.date(2024, 5, 1)
    backfill = historical_backfill(**common, start=dt.date(2024, 4, 1), end=end, return_state=True)
    update = incremental_update(**common, timeframes=["1d", "1h"], end=end, return_state=True)
    repair = repair_gaps(**common, timeframes=["1d", "1h"], end=end, dry_run=True, return_state=True)
    assert flow_run_of(backfill).name == "synthetic AAPL,MSFT 1d 2024-04-01..2024-05-01"
    assert flow_run_of(update).name == "update synthetic AAPL,MSFT 1d,1h to 2024-05-01"
    assert flow_run_of(repair).name == "repair synthetic AAPL,MSFT 1d,1h to 2024-05-01"


def test_the_run_artifacts_read_naturally_and_fit_the_page(sqlite_url: str) -> None:
    from flows.backfill import historical_backfill

    state = historical_backfill(
        symbols=["AAPL", "MSFT"],
        start=dt.date(2024, 1, 2),
        end=dt.date(2024, 1, 31),
        warehouse_url=sqlite_url,
        return_state=True,
    )
    assert state.is_completed()
    artifacts = artifacts_of(state.state_details.flow_run_id)
    progress = artifacts["progress"]
    assert (progress.data, progress.description) == (100.0, "historical_backfill: 2 of 2 chunks done")
    summary = str(artifacts["historical-backfill-summary"].data)
    counts = summary.split("\n\n")[1].splitlines()  # the first table: one row per count, two columns
    assert counts[:2] == ["| count | value |", "|---|---:|"]
    assert "| chunks planned | 2 |" in counts and "| loaded | 2 |" in counts and "| bars written | 42 |" in counts
    assert all(line.count("|") == 3 for line in counts)


def test_repair_looks_back_as_far_as_an_update_unless_its_deployment_says_why() -> None:
    import inspect

    import yaml

    from flows.incremental import incremental_update
    from flows.repair import repair_gaps
    from tests.conftest import ROOT

    def default(flow: Any) -> Any:
        return inspect.signature(flow.fn).parameters["lookback_days"].default

    assert default(repair_gaps) == default(incremental_update) == 30
    deployments = {d["name"]: d for d in yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]}
    assert deployments["repair-gaps"]["parameters"]["lookback_days"] == default(repair_gaps)
    assert deployments["incremental"]["parameters"]["lookback_days"] == default(incremental_update)


def test_a_daily_bar_on_no_session_is_named_by_its_date(sqlite_url: str, tmp_path: Path, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)
    rows = ["2024-01-05,1.5,2,1,1.5,100", "2024-01-06,1.5,2,1,1.5,100"]  # a Friday and a Saturday
    (tmp_path / "SATD.csv").write_text("Date,Open,High,Low,Close,Volume\n" + "\n".join(rows) + "\n")
    argv = ["backfill", "--provider", "csv", "--symbols", "SATD", "--start", "2024-01-02", "--end", "2024-01-31"]
    assert main([*argv, "--warehouse", sqlite_url, "--option", f"directory={tmp_path}"]) == 1
    (line,) = [line for line in capsys.readouterr().out.splitlines() if "REJECTED" in line]
    assert "1 row(s) at 2024-01-06, dates XNYS has no session on. Ways out: --on-invalid quarantine_rows" in line
    assert "--calendar NAME if SATD trades on another exchange than XNYS" in line and "hours=" not in line, line
