"""Trust, second round, the Prefect side: keys checked before a run starts, no warehouse password in Prefect's
database, quiet expected failures, crash notices that say what to do, and a worker that stops when told."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.team_server import BIN

D = dt.date
KEY_VARIABLES = (
    "MASSIVE_API_KEY",
    "POLYGON_API_KEY",
    "DATABENTO_API_KEY",
    "CANDLEFLOW_POLYGON_API_KEY_BLOCK",
    "CANDLEFLOW_DATABENTO_API_KEY_BLOCK",
    "CANDLEFLOW_FLATFILES_ACCESS_KEY_ID",
    "CANDLEFLOW_FLATFILES_SECRET_ACCESS_KEY",
)


def keyless_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in KEY_VARIABLES and not k.startswith("PREFECT_API")}
    return {**env, "PREFECT_HOME": str(tmp_path / "prefect-home"), **extra}


@pytest.mark.parametrize(
    ("provider", "message"),
    [
        (
            "polygon",
            "candleflow: error: provider polygon has no key: set MASSIVE_API_KEY (or POLYGON_API_KEY), or name a "
            "Prefect Secret block holding it in CANDLEFLOW_POLYGON_API_KEY_BLOCK; nothing was fetched",
        ),
        (
            "databento",
            "candleflow: error: provider databento has no key: set DATABENTO_API_KEY, or name a Prefect Secret "
            "block holding it in CANDLEFLOW_DATABENTO_API_KEY_BLOCK; nothing was fetched",
        ),
        (
            "polygon-flatfiles",
            "candleflow: error: provider polygon-flatfiles has no key: set CANDLEFLOW_FLATFILES_ACCESS_KEY_ID and "
            "CANDLEFLOW_FLATFILES_SECRET_ACCESS_KEY; nothing was fetched",
        ),
    ],
)
def test_a_missing_vendor_key_is_refused_before_anything_runs(provider: str, message: str, tmp_path: Path) -> None:
    warehouse = tmp_path / "w.db"
    argv = [str(BIN / "candleflow"), "backfill", "--provider", provider, "--symbols", "AAPL"]
    argv += ["--start", "2024-03-01", "--end", "2024-03-28", "--warehouse", f"sqlite:///{warehouse}"]
    argv += ["--option", "dataset=XNAS.ITCH"] if provider == "databento" else []
    done = subprocess.run(argv, env=keyless_env(tmp_path), capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [message]
    assert not warehouse.exists(), "nothing may be written"
    assert not (tmp_path / "prefect-home").exists(), "no Prefect server may start"


@pytest.mark.flows
@pytest.mark.usefixtures("prefect_harness")
def test_a_flow_without_its_key_or_its_secret_block_fails_before_fetching(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from flows.backfill import historical_backfill

    for variable in KEY_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    args: dict[str, Any] = dict(symbols=["AAPL"], start=D(2024, 3, 1), end=D(2024, 3, 28), warehouse_url=sqlite_url)
    no_key = historical_backfill(
        provider="databento", provider_options={"dataset": "XNAS.ITCH"}, **args, return_state=True
    )
    monkeypatch.setenv("CANDLEFLOW_POLYGON_API_KEY_BLOCK", "candleflow-no-such-key-block")
    no_block = historical_backfill(provider="polygon", **args, return_state=True)
    expected = {
        no_key: "provider databento has no key: set DATABENTO_API_KEY, or name a Prefect Secret block holding it in "
        "CANDLEFLOW_DATABENTO_API_KEY_BLOCK; nothing was fetched",
        no_block: "no Prefect Secret block named 'candleflow-no-such-key-block': create it or fix "
        "CANDLEFLOW_POLYGON_API_KEY_BLOCK",
    }
    for state, message in expected.items():
        assert state.is_failed()
        assert str(state.message).endswith(message) and len(str(state.message).splitlines()) == 1, state.message
        with get_client(sync_client=True) as client:
            run_id = state.state_details.flow_run_id
            tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id])))
        assert [t.name for t in tasks] == [], "nothing may run before the key is checked"
    assert _ledger_rows(sqlite_url) == 0


def _ledger_rows(url: str) -> int:
    import sqlalchemy as sa

    from warehouse.engine import get_engine

    with get_engine(url).connect() as conn:
        if not sa.inspect(conn).has_table("ingest_ledger"):
            return 0
        return int(conn.execute(sa.text("SELECT count(*) FROM ingest_ledger")).scalar() or 0)


PASSWORD = "s3cret-pw"


def _with_password(url: str, password: str) -> str:
    return url.replace("postgres@", f"postgres:{password}@", 1)


@pytest.mark.postgres
@pytest.mark.server
def test_the_warehouse_password_never_reaches_the_prefect_database(team: Any, postgres_url: str) -> None:
    """A command-line run into a warehouse whose URL holds a password: the Prefect server's database, dumped
    whole (flow-run parameters, logs, artifacts, events), holds the URL without it. The local PostgreSQL trusts
    every connection, so any password works."""
    argv = [str(BIN / "candleflow"), "backfill", "--symbols", "PWD1", "--start", "2024-01-01", "--end", "2024-12-31"]
    argv += ["--warehouse", _with_password(postgres_url, PASSWORD)]
    done = subprocess.run(argv, env=team.env(), capture_output=True, text=True, cwd=team.home, timeout=180)
    assert done.returncode == 0, done.stderr
    assert "1 chunks run (1 loaded" in done.stdout
    dump = subprocess.run(
        ["pg_dump", "--data-only", "-h", "127.0.0.1", "-U", "postgres", "-d", team.database],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    schema = postgres_url.rsplit("%3D", 1)[1]
    assert schema in dump, "the run's parameters are in the dump"
    assert PASSWORD not in dump
    assert "postgres@127.0.0.1:5432/test" in dump


@pytest.mark.flows
@pytest.mark.usefixtures("prefect_harness")
def test_a_flow_refuses_a_warehouse_url_holding_a_password(postgres_url: str) -> None:
    from flows.backfill import historical_backfill

    url = _with_password(postgres_url, "other-pw")
    state = historical_backfill(
        symbols=["PWD2"], start=D(2024, 1, 1), end=D(2024, 1, 31), warehouse_url=url, return_state=True
    )
    assert state.is_failed()
    message = str(state.message)
    assert message.endswith(
        "warehouse_url holds a password, which Prefect keeps in plain text with the run's parameters: leave it out "
        "of the URL and set CANDLEFLOW_WAREHOUSE_PASSWORD (or CANDLEFLOW_WAREHOUSE_URL with the password) where the "
        "run runs"
    ), message
    assert "other-pw" not in message


def test_the_password_comes_from_where_the_run_runs(postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from warehouse.engine import get_engine, without_password

    full = _with_password(postgres_url, PASSWORD)
    bare, password = without_password(full)
    assert password == PASSWORD and PASSWORD not in bare and bare.startswith("postgresql+psycopg://postgres@")
    monkeypatch.setenv("CANDLEFLOW_WAREHOUSE_URL", full)
    assert get_engine(bare).url.password == PASSWORD
    monkeypatch.delenv("CANDLEFLOW_WAREHOUSE_URL")
    monkeypatch.setenv("CANDLEFLOW_WAREHOUSE_PASSWORD", "from-the-environment")
    assert get_engine(bare).url.password == "from-the-environment"
