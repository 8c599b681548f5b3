"""No zombies from the command line: a run stopped by SIGTERM is marked Crashed and its temporary Prefect server
stops; after SIGKILL the temporary server does not outlive the command."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
from pathlib import Path

import pytest

from tests.team_server import BIN, alive, children_of, free_port, wait_for

TEMPORARY = (
    "prefect: PREFECT_API_URL is not set, starting a temporary server for this run (10-20 s; "
    "`candleflow server` starts a lasting one)"
)


def start_cli(tmp_path: Path, symbols: str) -> tuple[subprocess.Popen[str], Path]:
    home = tmp_path / "prefect-home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env.update(PREFECT_HOME=str(home))
    argv = [str(BIN / "candleflow"), "backfill", "--symbols", symbols, "--timeframe", "1m"]
    argv += ["--start", "2022-01-01", "--end", "2023-12-31"]
    cli = subprocess.Popen(argv, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return cli, home


def server_of(cli: subprocess.Popen[str]) -> int:
    def found() -> int | None:
        for pid in children_of(cli.pid):
            if b"uvicorn" in (Path("/proc") / str(pid) / "cmdline").read_bytes():
                return pid
        return None

    return int(wait_for("the temporary server to start", found, timeout=60))


def run_states(home: Path) -> list[str]:
    try:
        with sqlite3.connect(home / "prefect.db") as db:
            return [row[0] for row in db.execute("SELECT state_type FROM flow_run")]
    except sqlite3.OperationalError:  # the server is still creating its tables
        return []


def test_sigkill_leaves_no_temporary_server_behind(tmp_path: Path) -> None:
    cli, _ = start_cli(tmp_path, "SKILL")
    server = server_of(cli)
    cli.kill()
    cli.communicate(timeout=30)
    wait_for("the orphaned temporary server to stop", lambda: not alive(server), timeout=20)


def test_sigterm_crashes_the_run_and_stops_the_server(tmp_path: Path) -> None:
    cli, home = start_cli(tmp_path, "STERM")
    server = server_of(cli)
    wait_for("the run to start", lambda: (home / "prefect.db").exists() and "RUNNING" in run_states(home), 120)
    cli.send_signal(signal.SIGTERM)
    out, err = cli.communicate(timeout=60)
    assert cli.returncode == 128 + signal.SIGTERM, err
    assert err.splitlines()[0] == TEMPORARY
    assert err.splitlines()[-1] == (
        "candleflow: stopped by SIGTERM: the run was marked Crashed; chunks committed before it stay, "
        "and the same command fetches the rest"
    )
    assert out == ""
    assert not alive(server)
    assert run_states(home) == ["CRASHED"]


@pytest.mark.parametrize("command", ["setup", "worker"])
def test_team_commands_need_a_lasting_server(command: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env.update(PREFECT_HOME=str(tmp_path))
    done = subprocess.run([str(BIN / "candleflow"), command], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.startswith("candleflow: error: PREFECT_API_URL is not set: ")
    assert len(done.stderr.splitlines()) == 1


def test_the_server_refuses_a_database_it_cannot_reach(tmp_path: Path) -> None:
    url = "postgresql+asyncpg://postgres:hunter2@127.0.0.1:1/prefect"
    argv = [str(BIN / "candleflow"), "server", "--port", str(free_port()), "--database-url", url]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 2 and len(done.stderr.splitlines()) == 1
    assert done.stderr.startswith("candleflow: error: ")
    assert "hunter2" not in done.stderr


def test_the_server_wants_a_postgresql_database(tmp_path: Path) -> None:
    argv = [str(BIN / "candleflow"), "server", "--database-url", "sqlite+aiosqlite:///x.db"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 2
    assert "is not a PostgreSQL database URL" in done.stderr and not (tmp_path / "x.db").exists()
