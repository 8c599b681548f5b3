"""Issue #17, items 4 and 8: a refetched window ends equal to the source (bars it dropped are removed and counted),
and a chunk that fails validation costs at most its calendar year (daily) or month (intraday)."""

import datetime as dt
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from candleflow.checksum import frame_checksum
from candleflow.errors import IncompleteRunError
from candleflow.model import Chunk, LedgerEntry, LedgerStatus
from candleflow.planning import PlanMode, plan_chunks, select_chunks, split_failed, sub_chunks
from candleflow.timeframes import get_timeframe
from flows.backfill import historical_backfill
from providers import get_provider
from providers.base import FetchRequest
from tests.conftest import count
from tests.providers_support import csv_run
from tests.test_trust import yahoo_file
from warehouse.engine import get_engine
from warehouse.load import load_chunk
from warehouse.quarantine import reject_chunk
from warehouse.queries import read_ledger
from warehouse.schema import ensure_schema

D = dt.date


def ledger(url: str) -> list[tuple[int, int, LedgerStatus, int | None]]:
    """(start year, end year, status, rows) of every ledger row, in window order."""
    return sorted(
        (e.window_start.year, (e.window_end - pd.Timedelta(days=1)).year, e.status, e.rows)
        for e in read_ledger(get_engine(url))
    )


# --- item 4: a bar the source dropped does not stay ---


@pytest.mark.flows
@pytest.mark.usefixtures("prefect_harness")
def test_a_bar_the_source_dropped_is_removed_and_the_next_run_is_unchanged(warehouse_url: str, tmp_path: Path) -> None:
    yahoo_file(tmp_path, "2024-01-01", "2024-04-01")
    args = csv_run(tmp_path, warehouse_url, ["AAPL"], D(2024, 1, 1), D(2024, 3, 28))
    assert historical_backfill(**args).bars_written == 61
    source = pd.read_csv(tmp_path / "AAPL.csv")
    dropped = source.loc[10, "Date"]
    source.drop(index=10).to_csv(tmp_path / "AAPL.csv", index=False)  # the vendor withdraws one bar
    summary = historical_backfill(**args, mode="all")
    assert summary.ok and summary.removed == 1 and summary.bars_written == 0
    assert summary.revised == 1  # a final window whose source changed: a restatement
    assert "0 unchanged, 1 revised, 1 bar removed)" in summary.headline()
    assert "| bars removed |" in summary.markdown()
    assert count(warehouse_url, "SELECT count(*) FROM bars") == 60
    with get_engine(warehouse_url).connect() as conn:
        held = pd.to_datetime(pd.read_sql(sa.text("SELECT ts FROM bars"), conn)["ts"], utc=True)
    assert pd.Timestamp(dropped, tz="UTC") not in set(held)
    assert ledger(warehouse_url) == [(2024, 2024, LedgerStatus.LOADED, 60)]
    again = historical_backfill(**args, mode="all")
    assert again.unchanged == 1 and again.removed == 0 and again.bars_written == 0


@pytest.mark.flows
@pytest.mark.usefixtures("prefect_harness")
def test_a_bar_the_warehouse_holds_beyond_the_source_is_never_settled_unchanged(
    warehouse_url: str, tmp_path: Path
) -> None:
    """Two chunks in one task: the batch's unchanged check (settle_unchanged) sees the extra bar too."""
    for symbol in ("AAPL", "MSFT"):
        yahoo_file(tmp_path, "2024-01-01", "2024-04-01", symbol)
    args = csv_run(tmp_path, warehouse_url, ["AAPL", "MSFT"], D(2024, 1, 1), D(2024, 3, 28))
    assert historical_backfill(**args).bars_written == 122
    with get_engine(warehouse_url).begin() as conn:  # a bar the source never had (another tool wrote it)
        conn.execute(
            sa.text(
                "INSERT INTO bars (provider, symbol, timeframe, ts, open, high, low, close, volume) "
                "VALUES ('csv', 'AAPL', '1d', :ts, 1, 1, 1, 1, 0)"
            ),
            {"ts": dt.datetime(2024, 1, 6, tzinfo=dt.UTC)},
        )
    summary = historical_backfill(**args, mode="all")
    results = {r.chunk.symbol: r for r in summary.results}
    assert (results["AAPL"].unchanged, results["AAPL"].removed) == (False, 1)
    assert (results["MSFT"].unchanged, results["MSFT"].removed) == (True, 0)
    assert count(warehouse_url, "SELECT count(*) FROM bars") == 122
    again = historical_backfill(**args, mode="all")
    assert again.unchanged == 2 and again.removed == 0


@pytest.fixture
def engine(warehouse_url: str) -> sa.Engine:
    eng = get_engine(warehouse_url)
    ensure_schema(eng)
    return eng


MARCH = Chunk("synthetic", "AAPL", "1m", pd.Timestamp("2024-03-01", tz="UTC"), pd.Timestamp("2024-04-01", tz="UTC"))


@pytest.fixture(scope="module")
def minutes() -> pd.DataFrame:
    request = FetchRequest(("AAPL",), get_timeframe("1m"), MARCH.window_start, MARCH.window_end)
    return get_provider("synthetic").fetch(request).bars


def bars_held(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text("SELECT count(*) FROM bars")).scalar_one())


def test_a_window_the_source_now_says_is_empty_loses_its_bars(engine: sa.Engine, minutes: pd.DataFrame) -> None:
    load_chunk(engine, MARCH, minutes, checksum=frame_checksum(minutes), flow_run_id="r1")
    none = minutes.iloc[0:0]
    outcome = load_chunk(engine, MARCH, none, checksum=frame_checksum(none), flow_run_id="r2")
    assert outcome.status is LedgerStatus.EMPTY and outcome.removed == len(minutes) and outcome.revised
    assert bars_held(engine) == 0
    (entry,) = read_ledger(engine)
    assert entry.status is LedgerStatus.EMPTY and entry.rows == 0


def test_bars_outside_the_window_and_of_other_series_stay(engine: sa.Engine, minutes: pd.DataFrame) -> None:
    first_half = replace(MARCH, window_end=pd.Timestamp("2024-03-16", tz="UTC"))
    load_chunk(engine, MARCH, minutes, checksum=frame_checksum(minutes), flow_run_id="r1")
    msft = minutes.assign(symbol="MSFT")
    load_chunk(engine, replace(MARCH, symbol="MSFT"), msft, checksum=frame_checksum(msft), flow_run_id="r1")
    inside = minutes[minutes["ts"] < first_half.window_end]
    kept = inside.drop(index=inside.index[[0, 5]])
    outcome = load_chunk(engine, first_half, kept, checksum=frame_checksum(kept), flow_run_id="r2")
    assert (outcome.written, outcome.removed) == (0, 2)
    assert bars_held(engine) == 2 * len(minutes) - 2


def test_loading_good_rows_removes_what_the_source_dropped_a_full_reject_removes_nothing(
    engine: sa.Engine, minutes: pd.DataFrame
) -> None:
    load_chunk(engine, MARCH, minutes, checksum=frame_checksum(minutes), flow_run_id="r1")
    dropped = minutes.drop(index=[3, 4]).reset_index(drop=True)
    bad = {7: ["high >= low"]}
    rejected = reject_chunk(engine, MARCH, dropped, bad, ["high >= low"], flow_run_id="r2", checksum="x")
    assert rejected.status is LedgerStatus.REJECTED and rejected.removed == 0
    assert bars_held(engine) == len(minutes)
    partial = reject_chunk(
        engine, MARCH, dropped, bad, ["high >= low"], flow_run_id="r3", load_good_rows=True, checksum="y"
    )
    # the window now holds exactly the good rows: the two the source dropped and the one it now sends bad are gone
    assert partial.status is LedgerStatus.PARTIAL and partial.removed == 3
    assert bars_held(engine) == len(minutes) - 3 == partial.rows
    (entry,) = read_ledger(engine)
    assert entry.status is LedgerStatus.PARTIAL and entry.rows == len(minutes) - 3


def test_no_bar_is_removed_when_the_source_still_has_them_all(engine: sa.Engine, minutes: pd.DataFrame) -> None:
    load_chunk(engine, MARCH, minutes, checksum=frame_checksum(minutes), flow_run_id="r1")
    changed = minutes.copy()
    changed.loc[[10, 20], "volume"] = changed.loc[[10, 20], "volume"] + np.float64(1)
    outcome = load_chunk(engine, MARCH, changed, checksum=frame_checksum(changed), flow_run_id="r2")
    assert (outcome.written, outcome.removed) == (2, 0) and bars_held(engine) == len(minutes)


# --- item 8: a rejected chunk costs at most its calendar year (daily) or month (intraday) ---


def bad_yahoo_file(path: Path, bad_dates: tuple[str, ...]) -> Path:
    """A real-sized daily file, 2008-2017 (2,518 sessions), whose bars on `bad_dates` have high below low."""
    yahoo_file(path, "2008-01-01", "2018-01-01")
    source = pd.read_csv(path / "AAPL.csv")
    bad = source["Date"].isin(bad_dates)
    assert bad.sum() == len(bad_dates)
    source.loc[bad, "High"] = source.loc[bad, "Low"] - 1.0
    source.to_csv(path / "AAPL.csv", index=False)
    return path


def outcomes(results: list) -> list[tuple[str, LedgerStatus]]:  # type: ignore[type-arg]
    return [(r.chunk.period(), r.status) for r in results]


@pytest.mark.flows
@pytest.mark.usefixtures("prefect_harness")
def test_two_bad_bars_in_2015_keep_only_2015_out(sqlite_url: str, tmp_path: Path) -> None:
    bad_yahoo_file(tmp_path, ("2015-03-02", "2015-09-15"))
    args = csv_run(tmp_path, sqlite_url, ["AAPL"], D(2008, 1, 1), D(2017, 12, 31))
    with pytest.raises(IncompleteRunError) as info:
        historical_backfill(**args)
    summary = info.value.summary
    assert outcomes(summary.results) == [
        ("2008-2009", LedgerStatus.LOADED),
        ("2010-2014", LedgerStatus.LOADED),
        ("2015", LedgerStatus.REJECTED),
        ("2016", LedgerStatus.LOADED),
        ("2017", LedgerStatus.LOADED),
    ]
    (rejected,) = summary.problems()
    assert rejected.error is not None and rejected.error.startswith("2 bad row(s); all 252 quarantined, none loaded")
    assert count(sqlite_url, "SELECT count(*) FROM bars") == 2518 - 252 == 2266  # was 1,763: 2015-2017 out
    assert count(sqlite_url, "SELECT count(*) FROM quarantine") == 252
    assert ledger(sqlite_url) == [
        (2008, 2009, LedgerStatus.LOADED, 505),
        (2010, 2014, LedgerStatus.LOADED, 1258),
        (2015, 2015, LedgerStatus.REJECTED, 0),
        (2016, 2016, LedgerStatus.LOADED, 252),
        (2017, 2017, LedgerStatus.LOADED, 251),
    ]
    assert "| 2015 |" not in summary.markdown() and "AAPL:1d:2015-01-01..2015-12-31 | rejected" in summary.markdown()
    # later runs fetch only the rejected year, whichever mode asks
    for mode in ("missing", "failed"):
        with pytest.raises(IncompleteRunError) as again:
            historical_backfill(**args, mode=mode)
        assert outcomes(again.value.summary.results) == [("2015", LedgerStatus.REJECTED)]
        assert again.value.summary.skipped == 2
    assert count(sqlite_url, "SELECT count(*) FROM bars") == 2266
    yahoo_file(tmp_path, "2008-01-01", "2018-01-01")  # the vendor fixes its file
    fixed = historical_backfill(**args, mode="failed")
    assert fixed.ok and outcomes(fixed.results) == [("2015", LedgerStatus.LOADED)] and fixed.bars_written == 252
    assert count(sqlite_url, "SELECT count(*) FROM bars") == 2518
    assert historical_backfill(**args).results == []  # every year held now


@pytest.mark.flows
@pytest.mark.usefixtures("prefect_harness")
def test_quarantining_rows_still_loads_the_whole_window_but_its_bad_rows(sqlite_url: str, tmp_path: Path) -> None:
    bad_yahoo_file(tmp_path, ("2015-03-02", "2015-09-15"))
    with pytest.raises(IncompleteRunError) as info:
        historical_backfill(
            **csv_run(tmp_path, sqlite_url, ["AAPL"], D(2008, 1, 1), D(2017, 12, 31), on_invalid="quarantine_rows")
        )
    assert outcomes(info.value.summary.results) == [
        ("2008-2009", LedgerStatus.LOADED),
        ("2010-2014", LedgerStatus.LOADED),
        ("2015-2017", LedgerStatus.PARTIAL),
    ]
    assert count(sqlite_url, "SELECT count(*) FROM bars") == 2516
    assert count(sqlite_url, "SELECT count(*) FROM quarantine") == 2


def utc(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


def test_a_chunk_is_cut_into_its_calendar_years_or_months_and_a_session_never() -> None:
    (block,) = plan_chunks("csv", ["A"], get_timeframe("1d"), D(2015, 1, 1), D(2017, 12, 31))
    assert [c.period() for c in sub_chunks(block)] == ["2015", "2016", "2017"]
    (clipped,) = plan_chunks("csv", ["A"], get_timeframe("1d"), D(2015, 6, 1), D(2016, 3, 31))
    assert [(c.window_start, c.window_end) for c in sub_chunks(clipped)] == [
        (utc("2015-06-01"), utc("2016-01-01")),
        (utc("2016-01-01"), utc("2016-04-01")),
    ]
    (quarter,) = plan_chunks("csv", ["A"], get_timeframe("1h"), D(2024, 1, 1), D(2024, 3, 31))
    assert [c.period() for c in sub_chunks(replace(quarter, calendar="XLON"))] == ["2024-01", "2024-02", "2024-03"]
    assert {c.calendar for c in sub_chunks(replace(quarter, calendar="XLON"))} == {"XLON"}
    (month,) = plan_chunks("csv", ["A"], get_timeframe("1m"), D(2024, 3, 1), D(2024, 3, 31))
    assert sub_chunks(month) == [month]
    session = Chunk("f", "A", "1m", utc("2024-03-31 04:00"), utc("2024-04-01 04:00"))  # a New York day
    assert sub_chunks(session) == [session]


def test_a_failed_chunk_and_its_verdict_are_split_by_the_rows_times() -> None:
    (block,) = plan_chunks("csv", ["A"], get_timeframe("1d"), D(2015, 1, 1), D(2017, 12, 31))
    ts = pd.Series(pd.to_datetime(["2015-03-02", None, "2016-05-02", "2017-01-03", "2015-12-31"], utc=True))
    bad = {1: ["ts not null"], 3: ["high >= low", "high >= open"]}
    parts = split_failed(block, ts, bad, ["high >= low", "ts not null", "high >= open"])
    assert parts is not None
    assert [(p.chunk.period(), p.rows, p.bad_rows, p.failed_rules, p.ok) for p in parts] == [
        ("2015", [0, 1, 4], {1: ["ts not null"]}, ["ts not null"], False),  # a blank time goes with the row before
        ("2016", [2], {}, [], True),
        ("2017", [3], {0: ["high >= low", "high >= open"]}, ["high >= low", "high >= open"], False),
    ]
    first_blank = split_failed(block, ts.iloc[[1, 2]].reset_index(drop=True), {0: ["ts not null"]}, ["ts not null"])
    assert first_blank is not None and [p.rows for p in first_blank] == [[], [0, 1], []]  # or the row after it
    assert split_failed(block, ts, bad, ["high >= low", "row count"]) is None  # a rule of the chunk as a whole
    assert split_failed(block, ts.iloc[[1]], {0: ["ts not null"]}, ["ts not null"]) is None  # no time to go by
    (year,) = plan_chunks("csv", ["A"], get_timeframe("1d"), D(2015, 1, 1), D(2015, 12, 31))
    assert split_failed(year, ts, bad, ["high >= low"]) is None  # nothing smaller to cut it into


def test_of_a_chunk_not_held_only_the_years_not_held_are_planned() -> None:
    (block,) = plan_chunks("csv", ["A"], get_timeframe("1d"), D(2015, 1, 1), D(2019, 12, 31))
    years = {y: Chunk("csv", "A", "1d", utc(f"{y}-01-01"), utc(f"{y + 1}-01-01")) for y in range(2015, 2020)}

    def entry(year: int, status: LedgerStatus) -> LedgerEntry:
        c = years[year]
        return LedgerEntry(c.provider, c.symbol, c.timeframe, c.window_start, c.window_end, status)

    split = [entry(2015, LedgerStatus.REJECTED), entry(2016, LedgerStatus.LOADED), entry(2017, LedgerStatus.LOADED)]
    split += [entry(2018, LedgerStatus.REJECTED), entry(2019, LedgerStatus.EMPTY)]
    for mode in (PlanMode.MISSING, PlanMode.FAILED):
        selection = select_chunks([block], split, mode)
        assert selection.todo == [years[2015], years[2018]] and selection.skipped == []
    assert select_chunks([block], split, PlanMode.ALL).todo == [block]
    never_fetched = split[:3]  # 2018-2019 never fetched: one chunk for both; `failed` wants only the rejected year
    assert select_chunks([block], never_fetched, PlanMode.MISSING).todo == [
        years[2015],
        replace(block, window_start=utc("2018-01-01")),
    ]
    assert select_chunks([block], never_fetched, PlanMode.FAILED).todo == [years[2015]]
    assert select_chunks([block], [], PlanMode.MISSING).todo == [block]
    held = [entry(y, LedgerStatus.LOADED) for y in years]
    assert select_chunks([block], held, PlanMode.MISSING).skipped == [block]
    assert select_chunks([block], held, PlanMode.FAILED).skipped == [block]


@pytest.mark.flows
@pytest.mark.usefixtures("prefect_harness")
def test_a_bad_hourly_bar_costs_its_month_not_its_quarter(warehouse_url: str) -> None:
    with pytest.raises(IncompleteRunError) as info:  # the synthetic provider: one bad bar in every answer
        historical_backfill(
            symbols=["AAPL"],
            start=D(2024, 1, 1),
            end=D(2024, 3, 31),
            timeframe="1h",
            warehouse_url=warehouse_url,
            provider_options={"invalid_chunk_rate": 1.0},
        )
    results = info.value.summary.results
    assert [r.chunk.period() for r in results] == ["2024-01", "2024-02", "2024-03"]
    assert sorted(r.status for r in results) == [LedgerStatus.LOADED, LedgerStatus.LOADED, LedgerStatus.REJECTED]
    loaded = sum(r.rows for r in results if r.status is LedgerStatus.LOADED)
    assert loaded > 250 and count(warehouse_url, "SELECT count(*) FROM bars") == loaded
    assert sorted((e.window_start.month, e.status) for e in read_ledger(get_engine(warehouse_url))) == [
        (r.chunk.window_start.month, r.status) for r in results
    ]


def test_the_progress_bar_counts_the_years_a_rejected_chunk_was_cut_into(tmp_path: Path, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    from cli import main

    bad_yahoo_file(tmp_path, ("2015-03-02",))
    monkeypatch.chdir(tmp_path)
    argv = ["backfill", "--provider", "csv", "--option", f"directory={tmp_path}", "--symbols", "AAPL"]
    assert main([*argv, "--start", "2015-01-01", "--end", "2017-12-31"]) == 1
    err = capsys.readouterr().err
    # planned: one chunk (2015-2017); it ends as three years, and the bar says 3/3, never 3/1
    assert re.search(r"\b3/3\b", err) and not re.search(r"\b(\d+)/1\b", err), err
