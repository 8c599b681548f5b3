"""The `candleflow` command: bad input exits 2 with one clear line and writes nothing; runs report and exit."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from cli import main
from providers import PROVIDERS
from tests.conftest import ROOT, count

BACKFILL = [
    "backfill",
    "--provider",
    "synthetic",
    "--symbols",
    "AAPL",
    "--timeframe",
    "1d",
    "--start",
    "2024-01-01",
    "--end",
    "2024-12-31",
]


def with_args(args: list[str], **changes: str) -> list[str]:
    out = list(args)
    for flag, value in changes.items():
        out[out.index("--" + flag.replace("_", "-")) + 1] = value
    return out


BAD_INPUTS = [
    (with_args(BACKFILL, provider="yahoo"), f"unknown provider 'yahoo': use one of {', '.join(sorted(PROVIDERS))}"),
    (with_args(BACKFILL, timeframe="2h"), "unknown timeframe '2h': use one of 1m, 5m, 15m, 1h, 1d"),
    (
        with_args(BACKFILL, start="2024-02-01", end="2024-01-01"),
        "end date 2024-01-01 is before start date 2024-02-01",
    ),
    (with_args(BACKFILL, symbols="AAPL,MS FT"), "malformed symbol 'MS FT'"),
    (with_args(BACKFILL, symbols="AAPL,$$$"), "malformed symbol '$$$'"),
    (with_args(BACKFILL, symbols="A" * 33), "malformed symbol"),
    (with_args(BACKFILL, start="2024-13-01"), "start date '2024-13-01' is not a date: use YYYY-MM-DD"),
    (with_args(BACKFILL, start="1980-01-02"), "start date 1980-01-02 is before"),
    ([*BACKFILL, "--mode", "some"], "unknown mode 'some': use one of missing, failed, all"),
    ([*BACKFILL, "--option", "transient_failure_rate=7"], "bad option for provider 'synthetic'"),
    ([*BACKFILL, "--option", "seed"], "--option 'seed' is not key=value"),
    ([*BACKFILL, "--warehouse", "not a url"], "warehouse URL 'not a url' is not a SQLAlchemy URL"),
    ([*BACKFILL, "--warehouse", "mysql://u:secret@h/db"], "'mysql' is not supported"),
    ([*BACKFILL, "--warehouse", "sqlite:////no/such/folder/x.db"], "folder /no/such/folder does not exist"),
    ([*BACKFILL, "--warehouse", "postgresql://u:hunter2@127.0.0.1:1/db"], "cannot reach warehouse"),
    ([*BACKFILL, "--warehouse", "postgresql://u:hunter2@127.0.0.1:abc/db"], "the port is not a number"),
    ([*BACKFILL, "--warehouse", "postgresql//u:hunter2@host/db"], "'postgresql//u:***@host/db' is not a SQLAlchemy"),
    (
        [*with_args(BACKFILL, provider="csv"), "--option", "timezone=New_York"],
        "timezone: Value error, unknown time zone 'New_York': use an IANA name such as America/New_York",
    ),
    (
        [*with_args(BACKFILL, provider="csv"), "--option", "directory=/no/such/dir"],
        "csv: directory /no/such/dir does not exist: fix CANDLEFLOW_CSV_DIR or --option directory=PATH",
    ),
    (
        [*with_args(BACKFILL, provider="csv"), "--option", "directory=/tmp", "--option", "file=no-such-archive.csv"],
        "csv: file 'no-such-archive.csv' does not exist in /tmp: fix --option file=NAME",
    ),
    (["update", "--symbols", "AAPL", "--lookback-days", "0"], "--lookback-days 0 must be at least 1"),
    (["gaps", "--symbols", "AAPL", "--start", "x", "--end", "2024-01-01"], "start date 'x' is not a date"),
]


@pytest.mark.parametrize(("argv", "message"), BAD_INPUTS, ids=[m[:40] for _, m in BAD_INPUTS])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(argv, message, tmp_path, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err
    assert len(err.splitlines()) == 1, err
    assert "secret" not in err and "hunter2" not in err  # passwords never printed
    assert list(tmp_path.iterdir()) == []  # no candleflow.db, nothing half-written


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("CANDLEFLOW_RETRIES", "abc", "setting CANDLEFLOW_RETRIES: Input should be a valid integer"),
        ("CANDLEFLOW_TASK_WORKERS", "0", "setting CANDLEFLOW_TASK_WORKERS: Input should be greater than or equal to 1"),
        ("CANDLEFLOW_WAREHOUSE_URL", "postgresql://u:hunter2@h:port/db", "the port is not a number"),
    ],
)
def test_bad_settings_exit_2_with_one_line(variable, value, message, tmp_path, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(variable, value)
    assert main(BACKFILL) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("candleflow: error: ") and message in err and len(err.splitlines()) == 1, err
    assert "hunter2" not in err
    assert list(tmp_path.iterdir()) == []


def test_a_symbol_cannot_reach_outside_the_csv_directory(tmp_path, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    data = tmp_path / "data"
    data.mkdir()
    (tmp_path / "SECRET.csv").write_text("Date,Open,High,Low,Close,Volume\n2024-01-02,1,1,1,1,1\n")
    monkeypatch.chdir(tmp_path)
    argv = [*with_args(BACKFILL, provider="csv", symbols="../SECRET"), "--option", f"directory={data}"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"candleflow: error: csv: symbol '../SECRET' points outside the directory {data}: use a plain symbol such "
        "as AAPL or BRK.B"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["SECRET.csv", "data"]


def test_unreachable_postgres_database_is_named(postgres_url: str, capsys) -> None:  # type: ignore[no-untyped-def]
    """A user who may create databases gets the missing one created (tests/test_trust2_warehouse.py); one who may
    not is told the command that creates it."""
    import psycopg

    from tests.conftest import PG_DSN

    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute("DROP ROLE IF EXISTS cf_cli_nocreate")
        conn.execute("CREATE ROLE cf_cli_nocreate LOGIN NOCREATEDB")
    try:
        url = postgres_url.split("?")[0].rsplit("/", 1)[0].replace("postgres@", "cf_cli_nocreate@") + "/no_such_db"
        assert main([*BACKFILL, "--warehouse", url]) == 2
    finally:
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute("DROP ROLE cf_cli_nocreate")
    err = capsys.readouterr().err
    assert 'database "no_such_db" does not exist' in err and "CANDLEFLOW_WAREHOUSE_URL" in err
    assert "createdb -h 127.0.0.1 -p 5432 -U cf_cli_nocreate no_such_db" in err


def test_argparse_errors_exit_2() -> None:
    with pytest.raises(SystemExit) as info:
        main(["backfill", "--symbols", "AAPL"])
    assert info.value.code == 2


@pytest.mark.flows
@pytest.mark.usefixtures("prefect_harness")
def test_backfill_status_and_gaps_from_the_command_line(tmp_path: Path, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)  # the default warehouse is ./candleflow.db
    assert main([*BACKFILL[:-4], "--start", "2024-01-01", "--end", "2024-06-30", "--dry-run"]) == 0
    assert "dry run, 1 chunks planned, 1 to fetch" in capsys.readouterr().out
    assert list(tmp_path.iterdir()) == []  # a dry run leaves no empty warehouse file behind

    assert main(BACKFILL) == 0
    out = capsys.readouterr().out
    assert "1 chunks run (1 loaded, 0 empty, 0 rejected, 0 failed" in out and "252 bars written" in out
    timing = re.search(
        r"^  time ([0-9.]+) s: fetch ([0-9.]+) s \(\d+%\), validate ([0-9.]+) s \(\d+%\), load ([0-9.]+) s "
        r"\(\d+%\), orchestration ([0-9.]+) s \(\d+%\)$",
        out,
        re.MULTILINE,
    )
    assert timing, out  # where the time went, under the closing summary
    wall, *parts = map(float, timing.groups())
    assert sum(parts) == pytest.approx(wall, abs=0.25)  # the four shares add up to the run's wall clock
    assert count(f"sqlite:///{tmp_path / 'candleflow.db'}", "SELECT count(*) FROM bars") == 252

    assert main(BACKFILL) == 0
    assert "nothing to fetch" in capsys.readouterr().out

    bad = [*with_args(BACKFILL, symbols="MSFT"), "--option", "invalid_chunk_rate=1"]
    assert main(bad) == 1
    out = capsys.readouterr().out
    assert "1 rejected" in out and "REJECTED synthetic:MSFT:1d:2024-01-01..2024-12-31" in out

    assert main(["status"]) == 0
    out = capsys.readouterr().out
    assert "AAPL" in out and "252" in out and "MSFT" not in out.split("candleflow coverage")[1].split("AAPL")[0]

    with (tmp_path / "candleflow.db").open("rb"):
        pass
    gaps_args = ["gaps", "--symbols", "AAPL,MSFT", "--start", "2024-12-20", "--end", "2025-01-10"]
    assert main(gaps_args) == 1
    out = capsys.readouterr().out
    assert "chunk rejected by validation" in out  # MSFT's December sessions
    assert "not fetched yet" in out  # 2025 sessions
    assert main(["gaps", "--symbols", "AAPL", "--start", "2024-03-01", "--end", "2024-03-31"]) == 0
    assert "0 session(s) with missing or partial bars out of 20 expected" in capsys.readouterr().out


def test_console_script_is_installed_and_prints_help() -> None:
    exe = Path(sys.executable).with_name("candleflow")
    result = subprocess.run(
        [str(exe), "--help"], capture_output=True, text=True, cwd=ROOT, timeout=60, env={**os.environ}
    )
    assert result.returncode == 0 and "backfill" in result.stdout and "gaps" in result.stdout


def test_a_mistyped_command_names_the_help_to_read_once(capsys) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(SystemExit) as exited:
        main(["repair-gaps"])
    assert exited.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("candleflow: error: argument command: invalid choice: 'repair-gaps'"), err
    assert err.endswith("(see candleflow --help)") and len(err.splitlines()) == 1, err
    with pytest.raises(SystemExit):
        main(["backfill", "--nope"])
    assert capsys.readouterr().err.strip().endswith("(see candleflow backfill --help)")
