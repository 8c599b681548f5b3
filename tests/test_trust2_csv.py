"""Issue #17, csv items 1, 2, 3 and 6: time columns read wrongly or rows lost without a trace, reproduced first."""

import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from candleflow.errors import IncompleteRunError
from candleflow.model import LedgerStatus
from candleflow.report import RunSummary
from candleflow.timeframes import get_timeframe
from flows.backfill import historical_backfill
from providers import get_provider
from providers.base import FetchRequest
from providers.errors import TerminalProviderError
from tests.fault_table import record
from tests.providers_support import csv_run, synthetic_bars
from warehouse.engine import get_engine
from warehouse.queries import read_ledger

D = dt.date


def csv_backfill(
    url: str,
    directory: Path,
    start: dt.date,
    end: dt.date,
    *,
    symbol: str = "AAPL",
    timeframe: str = "1d",
    calendar: str | None = None,
    **options: str,
) -> RunSummary:
    """A backfill of `symbol` from the csv files in `directory` into `url`."""
    return historical_backfill(
        provider="csv",
        symbols=[symbol],
        timeframe=timeframe,
        start=start,
        end=end,
        calendar=calendar,
        warehouse_url=url,
        provider_options={"directory": str(directory), **options},
    )


def flow_test(test: Callable[..., None]) -> Callable[..., None]:
    """A test of the real flow, on the session's Prefect server."""
    return pytest.mark.flows(pytest.mark.usefixtures("prefect_harness")(test))


VALUES = ("open", "high", "low", "close", "volume")


def fetch(directory: Path, symbol: str, tf: str, start: str, end: str, **options: object) -> pd.DataFrame:
    provider = get_provider("csv", {"directory": str(directory), **options})
    return provider.fetch(
        FetchRequest((symbol,), get_timeframe(tf), pd.Timestamp(start, tz="UTC"), pd.Timestamp(end, tz="UTC"))
    ).bars


def bars_file(path: Path, bars: pd.DataFrame, times: pd.Series | list[object], column: str = "Date") -> Path:
    """`bars` written as a user's file, with its time column as `times`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame({column: list(times), **{c.title(): bars[c].to_numpy() for c in VALUES}})
    frame.to_csv(path, index=False)
    return path


def stored(url: str) -> pd.DataFrame:
    with get_engine(url).connect() as conn:
        frame = pd.read_sql(sa.text("SELECT ts, close FROM bars ORDER BY ts"), conn)
    return frame.assign(ts=pd.to_datetime(frame["ts"], utc=True))


def quarantined(url: str) -> list[dict[str, object]]:
    with get_engine(url).connect() as conn:
        rows = conn.execute(sa.text("SELECT row_data FROM quarantine ORDER BY id")).scalars().all()
    return [json.loads(r) for r in rows]


DAILY = synthetic_bars("AAPL", "1d", pd.Timestamp("2024-01-01", tz="UTC"), pd.Timestamp("2024-04-01", tz="UTC"))
MINUTES = synthetic_bars("AAPL", "1m", pd.Timestamp("2024-03-08", tz="UTC"), pd.Timestamp("2024-03-09", tz="UTC"))
NEW_YORK_WALL = MINUTES["ts"].dt.tz_convert("America/New_York").dt.strftime("%Y-%m-%d %H:%M")


# Item 1: day-first dates


@flow_test
def test_day_first_dates_load_on_their_own_days(sqlite_url: str, tmp_path: Path) -> None:
    bars_file(tmp_path / "AAPL.csv", DAILY, DAILY["ts"].dt.strftime("%d/%m/%Y"))  # 02/01/2024 is 2 January
    summary = csv_backfill(sqlite_url, tmp_path, D(2024, 1, 1), D(2024, 3, 28))
    assert summary.ok and summary.bars_written == len(DAILY)
    pd.testing.assert_series_equal(stored(sqlite_url)["ts"], DAILY["ts"].dt.as_unit("us"), check_names=False)
    assert stored(sqlite_url)["close"].tolist() == DAILY["close"].tolist()
    record("csv: dd/mm/yyyy dates (02/01/2024 is 2 January)", f"{summary.bars_written} bars on their own days")


def test_the_date_order_is_decided_once_per_column(tmp_path: Path) -> None:
    american = bars_file(tmp_path / "US.csv", DAILY, DAILY["ts"].dt.strftime("%m/%d/%Y"))  # 01/16/2024 decides
    assert fetch(american.parent, "US", "1d", "2024-01-01", "2024-04-01")["ts"].tolist() == DAILY["ts"].tolist()
    dotted = bars_file(tmp_path / "DE.csv", DAILY, DAILY["ts"].dt.strftime("%d.%m.%y"))  # 16.01.24: day first
    assert fetch(dotted.parent, "DE", "1d", "2024-01-01", "2024-04-01")["ts"].tolist() == DAILY["ts"].tolist()
    iso = bars_file(tmp_path / "ISO.csv", DAILY, DAILY["ts"].dt.strftime("%Y-%m-%d"))
    assert fetch(iso.parent, "ISO", "1d", "2024-01-01", "2024-04-01")["ts"].tolist() == DAILY["ts"].tolist()


def test_an_ambiguous_date_column_is_refused_until_the_order_is_given(tmp_path: Path) -> None:
    early = DAILY[DAILY["ts"].dt.day <= 12]  # every first and second field is 12 or less: both orders read
    bars_file(tmp_path / "X.csv", early, early["ts"].dt.strftime("%d/%m/%Y"))
    with pytest.raises(TerminalProviderError) as info:
        fetch(tmp_path, "X", "1d", "2024-01-01", "2024-04-01")
    message = str(info.value)
    assert "X.csv" in message and "column Date" in message and "02/01/2024" in message
    assert "--option dayfirst=true" in message and "--option date_format=%d/%m/%Y" in message
    assert len(message.splitlines()) == 1
    expected = early["ts"].tolist()
    assert fetch(tmp_path, "X", "1d", "2024-01-01", "2024-04-01", dayfirst=True)["ts"].tolist() == expected
    by_format = fetch(tmp_path, "X", "1d", "2024-01-01", "2024-04-01", date_format="%d/%m/%Y")
    assert by_format["ts"].tolist() == expected
    month_first = fetch(tmp_path, "X", "1d", "2024-01-01", "2024-12-31", dayfirst=False)
    first_row = month_first["close"] == early["close"].iloc[0]  # 02/01/2024, read as asked though wrong here
    assert month_first.loc[first_row, "ts"].item() == pd.Timestamp("2024-02-01", tz="UTC")


def test_a_day_first_option_the_dates_contradict_is_refused(tmp_path: Path) -> None:
    bars_file(tmp_path / "X.csv", DAILY, DAILY["ts"].dt.strftime("%d/%m/%Y"))
    with pytest.raises(TerminalProviderError, match=r"X.csv: column Date has 16/01/2024.* dayfirst=false"):
        fetch(tmp_path, "X", "1d", "2024-01-01", "2024-04-01", dayfirst=False)


def test_day_first_dates_with_a_separate_time_column(tmp_path: Path) -> None:
    local = MINUTES["ts"].dt.tz_convert("America/New_York")
    frame = pd.DataFrame({"Date": "08/03/2024", "Time": local.dt.strftime("%H:%M"), **{c: MINUTES[c] for c in VALUES}})
    frame.to_csv(tmp_path / "ES_1m.csv", index=False)
    got = fetch(tmp_path, "ES", "1m", "2024-03-01", "2024-04-01", timezone="America/New_York", dayfirst=True)
    assert got["ts"].tolist() == MINUTES["ts"].tolist()
    also = fetch(tmp_path, "ES", "1m", "2024-03-01", "2024-04-01", timezone="America/New_York", date_format="%d/%m/%Y")
    assert also["ts"].tolist() == MINUTES["ts"].tolist()


# Item 2: epoch timestamps


@flow_test
def test_epoch_milliseconds_load_as_their_times(sqlite_url: str, tmp_path: Path) -> None:
    millis = MINUTES["ts"].astype("int64") // 10**3  # microseconds since the epoch -> milliseconds
    bars_file(tmp_path / "1m" / "AAPL.csv", MINUTES, millis, column="timestamp")
    summary = csv_backfill(sqlite_url, tmp_path, D(2024, 3, 8), D(2024, 3, 8), timeframe="1m")
    assert summary.ok and summary.counts()["loaded"] == 1 and summary.bars_written == 390
    assert stored(sqlite_url)["ts"].tolist() == MINUTES["ts"].tolist()
    record("csv: epoch milliseconds", f"the unit told by the magnitude: {summary.bars_written} bars at their times")


@pytest.mark.parametrize(("unit", "per_second"), [("s", 1), ("ms", 10**3), ("us", 10**6), ("ns", 10**9)])
def test_each_epoch_unit_is_recognised_by_its_magnitude(tmp_path: Path, unit: str, per_second: int) -> None:
    seconds = DAILY["ts"].astype("int64") // 10**6
    bars_file(tmp_path / "X.csv", DAILY, seconds * per_second, column="ts")
    assert fetch(tmp_path, "X", "1d", "2024-01-01", "2024-04-01")["ts"].tolist() == DAILY["ts"].tolist()
    assert (
        fetch(tmp_path, "X", "1d", "2024-01-01", "2024-04-01", epoch_unit=unit)["ts"].tolist() == DAILY["ts"].tolist()
    )


def test_numbers_that_are_no_epoch_time_are_refused(tmp_path: Path) -> None:
    serial = (DAILY["ts"] - pd.Timestamp("1899-12-30", tz="UTC")).dt.days  # spreadsheet serial dates: 45293...
    bars_file(tmp_path / "X.csv", DAILY, serial)
    with pytest.raises(TerminalProviderError) as info:
        fetch(tmp_path, "X", "1d", "2024-01-01", "2024-04-01")
    message = str(info.value)
    assert "X.csv: column Date holds numbers from 45293 to 45379" in message and "epoch_unit=s|ms|us|ns" in message
    seconds = DAILY["ts"].astype("int64") // 10**6
    bars_file(tmp_path / "Y.csv", DAILY, seconds, column="ts")
    with pytest.raises(TerminalProviderError, match=r"Y.csv: column ts read as epoch ms falls in 1970"):
        fetch(tmp_path, "Y", "1d", "2024-01-01", "2024-04-01", epoch_unit="ms")


def test_dates_written_as_digits_are_dates(tmp_path: Path) -> None:
    bars_file(tmp_path / "X.csv", DAILY, DAILY["ts"].dt.strftime("%Y%m%d").astype(int))
    assert fetch(tmp_path, "X", "1d", "2024-01-01", "2024-04-01")["ts"].tolist() == DAILY["ts"].tolist()
    digits = MINUTES["ts"].dt.strftime("%Y%m%d%H%M").astype(int)  # 202403081430 is 1976 as epoch milliseconds
    bars_file(tmp_path / "1m" / "X.csv", MINUTES, digits, column="timestamp")
    assert fetch(tmp_path, "X", "1m", "2024-03-08", "2024-03-09")["ts"].tolist() == MINUTES["ts"].tolist()


@flow_test
def test_the_cli_no_longer_says_empty_for_numbers_it_cannot_read(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Numbers that are no epoch time in any unit (here minutes since 1970) used to be read as nanoseconds: every
    bar fell outside the window and the run said `empty`, exit 0."""
    from cli import main

    minutes = MINUTES["ts"].astype("int64") // (60 * 10**6)
    bars_file(tmp_path / "1m" / "AAPL.csv", MINUTES, minutes, column="timestamp")
    monkeypatch.chdir(tmp_path)
    argv = ["backfill", "--provider", "csv", "--symbols", "AAPL", "--timeframe", "1m", "--start", "2024-03-08"]
    code = main([*argv, "--end", "2024-03-08", "--option", f"directory={tmp_path}", "--warehouse", sqlite_url])
    out = capsys.readouterr().out
    assert code == 1, out
    (line,) = [line for line in out.splitlines() if "csv:AAPL:1m:2024-03-08" in line and "failed" in line.lower()]
    assert f"column timestamp holds numbers from {minutes.min()} to {minutes.max()}" in line
    assert "--option epoch_unit=s|ms|us|ns" in line
    assert [e.status for e in read_ledger(get_engine(sqlite_url))] == [LedgerStatus.FAILED]
    record("csv: numbers no epoch unit fits (minutes since 1970)", "exit 1: the chunk fails naming --option epoch_unit")


# Item 3: rows that vanished


def minute_file(tmp_path: Path, times: list[object]) -> Path:
    return bars_file(tmp_path / "1m" / "AAPL.csv", MINUTES.iloc[: len(times)], times, column="datetime")


@flow_test
def test_rows_with_unreadable_times_are_quarantined_and_counted(sqlite_url: str, tmp_path: Path) -> None:
    times = NEW_YORK_WALL.tolist()
    times[100], times[200] = "", "2024-03-08 12:6O"  # a blank and a typo (letter O)
    minute_file(tmp_path, times)
    args = csv_run(
        tmp_path,
        sqlite_url,
        ["AAPL"],
        D(2024, 3, 8),
        D(2024, 3, 8),
        timeframe="1m",
        options={"timezone": "America/New_York"},
    )
    with pytest.raises(IncompleteRunError) as info:
        historical_backfill(**args, on_invalid="quarantine_rows")
    (result,) = info.value.summary.results
    assert result.status is LedgerStatus.PARTIAL and result.written == 388
    assert result.error is not None and result.error.startswith("2 bad row(s) (2 with an unreadable time) quarantined")
    assert "2 bad row(s)" in info.value.summary.failure_message()
    rows = quarantined(sqlite_url)
    assert [r["as_written"].split(", ")[0] for r in rows] == ["datetime=", "datetime=2024-03-08 12:6O"]
    assert all(r["ts"] is None for r in rows)
    record(
        "csv: a blank and an unreadable time (quarantine_rows)",
        f"partial: both quarantined as written, {result.written} loaded; the error counts them",
    )


@flow_test
def test_a_local_time_skipped_at_the_spring_change_is_not_dropped(sqlite_url: str, tmp_path: Path) -> None:
    times = [*NEW_YORK_WALL.tolist()[:-1], "2024-03-10 02:30"]  # no such time in New York
    minute_file(tmp_path, times)
    with pytest.raises(IncompleteRunError) as info:
        csv_backfill(sqlite_url, tmp_path, D(2024, 3, 8), D(2024, 3, 10), timeframe="1m", timezone="America/New_York")
    (result,) = info.value.summary.results
    assert result.status is LedgerStatus.REJECTED
    assert result.error == (
        "1 bad row(s) (1 with an unreadable time); all 390 quarantined, none loaded: ts not null: 1 row(s) with no "
        "readable time (the quarantine keeps them as written). Ways out: --on-invalid quarantine_rows loads the other "
        "rows"
    )
    written = [r["as_written"] for r in quarantined(sqlite_url) if r["as_written"]]
    assert len(written) == 1 and written[0].startswith("datetime=2024-03-10 02:30, Open=")
    record(
        "csv: a New York time skipped at the spring change", "rejected (ts not null); the row quarantined as written"
    )


def test_unreadable_values_keep_their_row_and_never_decide_the_format(tmp_path: Path) -> None:
    dates = DAILY["ts"].dt.strftime("%d/%m/%Y").tolist()
    dates[0], dates[5] = "n/a", ""
    bars_file(tmp_path / "X.csv", DAILY, dates)
    got = fetch(tmp_path, "X", "1d", "2024-01-01", "2024-04-01")
    assert len(got) == len(DAILY) and got["ts"].isna().sum() == 2
    assert got["ts"].dropna().tolist() == DAILY["ts"].drop(index=[0, 5]).tolist()
    assert sorted(got["as_written"].dropna().str.split(", ").str[0]) == ["Date=", "Date=n/a"]
    millis = (DAILY["ts"].astype("int64") // 10**3).astype("Int64")
    millis.iloc[3] = pd.NA
    bars_file(tmp_path / "Y.csv", DAILY, millis, column="ts")
    got = fetch(tmp_path, "Y", "1d", "2024-01-01", "2024-04-01")
    assert len(got) == len(DAILY) and got["ts"].isna().sum() == 1


FALL_BACK = [  # New York, 2024-11-03: 01:00-01:59 happens twice, first in summer time (EDT), then in winter time
    "2024-11-03 00:00",
    "2024-11-03 01:00",
    "2024-11-03 01:00",
    "2024-11-03 02:00",
    "2024-11-03 03:00",
]
FALL_BACK_UTC = [pd.Timestamp(f"2024-11-03 {h:02d}:00", tz="UTC") for h in (4, 5, 6, 7, 8)]


def hourly(n: int) -> pd.DataFrame:
    return pd.DataFrame({"open": 10.0, "high": 20.0, "low": 9.0, "close": [10.0 + i for i in range(n)], "volume": 5})


@flow_test
def test_both_hours_of_a_fall_back_night_load(sqlite_url: str, tmp_path: Path) -> None:
    bars_file(tmp_path / "1h" / "BTC.csv", hourly(5), FALL_BACK, column="datetime")
    summary = csv_backfill(
        sqlite_url,
        tmp_path,
        D(2024, 11, 3),
        D(2024, 11, 3),
        symbol="BTC",
        timeframe="1h",
        calendar="24/7",
        timezone="America/New_York",
    )
    assert summary.ok and summary.bars_written == 5
    assert stored(sqlite_url)["ts"].tolist() == FALL_BACK_UTC
    record("csv: both 01:00 hours of a fall-back night", "both load, summer time first in file order")


def test_repeated_wall_times_follow_the_file_order(tmp_path: Path) -> None:
    bars_file(tmp_path / "1h" / "A.csv", hourly(5), FALL_BACK[::-1], column="datetime")  # newest first
    got = fetch(tmp_path, "A", "1h", "2024-11-01", "2024-11-05", timezone="America/New_York")
    assert got["ts"].tolist() == FALL_BACK_UTC and got["close"].tolist() == [14.0, 13.0, 12.0, 11.0, 10.0]
    once = [*FALL_BACK[:2], *FALL_BACK[3:], "2024-11-03 04:00"]  # one 01:00 only: summer or winter time?
    bars_file(tmp_path / "1h" / "B.csv", hourly(5), once, column="datetime")
    got = fetch(tmp_path, "B", "1h", "2024-11-01", "2024-11-05", timezone="America/New_York")
    assert got["ts"].isna().sum() == 1 and got.loc[got["ts"].isna(), "as_written"].str.contains("01:00").all()


# Item 6: bar spacing against the timeframe asked for


@flow_test
def test_five_minute_bars_in_the_minute_folder_are_refused(sqlite_url: str, tmp_path: Path) -> None:
    five = synthetic_bars("AAPL", "5m", pd.Timestamp("2024-03-08", tz="UTC"), pd.Timestamp("2024-03-09", tz="UTC"))
    bars_file(tmp_path / "1m" / "AAPL.csv", five, five["ts"].astype(str), column="timestamp")
    with pytest.raises(IncompleteRunError) as info:
        csv_backfill(sqlite_url, tmp_path, D(2024, 3, 8), D(2024, 3, 8), timeframe="1m")
    (result,) = info.value.summary.results
    assert result.status is LedgerStatus.FAILED and stored(sqlite_url).empty
    assert f"{tmp_path / '1m' / 'AAPL.csv'} holds bars 5m apart, not 1m bars" in (result.error or "")
    assert "move it to a 5m folder or ask for --timeframe 5m" in (result.error or "")
    record("csv: 5-minute bars in the 1m folder", "fails naming the file, the spacing and the fix; nothing stored")


def test_daily_and_intraday_files_read_at_the_other_kind_of_timeframe_are_refused(tmp_path: Path) -> None:
    bars_file(tmp_path / "1h" / "D.csv", DAILY, DAILY["ts"].dt.strftime("%Y-%m-%d"))
    with pytest.raises(TerminalProviderError, match=r"D.csv holds one bar a day, not 1h bars: .*--timeframe 1d"):
        fetch(tmp_path, "D", "1h", "2024-01-01", "2024-02-01")
    bars_file(tmp_path / "M.csv", MINUTES, MINUTES["ts"].astype(str), column="timestamp")
    with pytest.raises(TerminalProviderError) as info:
        fetch(tmp_path, "M", "1d", "2024-01-01", "2024-04-01")
    assert "M.csv holds bars 1m apart, not daily bars: move it to a 1m folder or ask for --timeframe 1m" in str(
        info.value
    )
    assert "Ticker" not in str(info.value)


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("epoch_unit=sec", "epoch_unit: Input should be 's', 'ms', 'us' or 'ns'"),
        ("date_format=dd/mm/yyyy", "date_format 'dd/mm/yyyy' has no % directive: write it like %d/%m/%Y"),
        ("dayfirst=maybe", "dayfirst: Input should be a valid boolean"),
    ],
)
def test_bad_time_options_exit_2_before_anything_runs(
    option: str, message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from cli import main

    monkeypatch.chdir(tmp_path)
    argv = ["backfill", "--provider", "csv", "--symbols", "AAPL", "--start", "2024-01-01", "--end", "2024-01-31"]
    assert main([*argv, "--option", f"directory={tmp_path}", "--option", option]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert list(tmp_path.iterdir()) == []
