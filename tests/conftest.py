"""Shared fixtures: real warehouses (a SQLite file; a fresh PostgreSQL schema on 127.0.0.1:5432) and one
session-wide Prefect test harness for the flow tests."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

os.environ.update(
    PREFECT_SERVER_ANALYTICS_ENABLED="false",
    DO_NOT_TRACK="1",
    PREFECT_SERVER_LOGGING_LEVEL="CRITICAL",
    GX_ANALYTICS_ENABLED="false",
    CANDLEFLOW_RETRY_BACKOFF_SECONDS="0",  # retries stay real, they just do not sleep in tests
    CANDLEFLOW_RETRY_JITTER_FACTOR="0",
    PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="180",
    # commands run in their own process, whatever `candleflow warm` the machine's user keeps (tests/test_warm.py
    # starts its own); `candleflow worker` still starts the worker's own runner
    CANDLEFLOW_WARM_SOCKET=f"/nonexistent/candleflow-tests-{os.getpid()}/warm.sock",
)
os.environ.pop("CANDLEFLOW_WAREHOUSE_URL", None)

import httpx
import psycopg
import pytest
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT.parent / "shared" / "fixtures"
PG_DSN = os.environ.get("CANDLEFLOW_TEST_PG_DSN", "host=127.0.0.1 port=5432 dbname=test user=postgres")
PG_URL = os.environ.get("CANDLEFLOW_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def _postgres_or_skip() -> None:
    try:
        with psycopg.connect(PG_DSN, connect_timeout=5):
            pass
    except psycopg.OperationalError as exc:
        message = f"PostgreSQL on 127.0.0.1:5432 is not reachable: {exc}"
        if os.environ.get("CI") == "true" or os.environ.get("CANDLEFLOW_REQUIRE_POSTGRES") == "1":
            pytest.fail(message + " (required under CI)")
        pytest.skip(message)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'warehouse.db'}"


@pytest.fixture
def reference_url(tmp_path: Path) -> str:
    """A second, separate SQLite warehouse to compare a run against."""
    return f"sqlite:///{tmp_path / 'reference.db'}"


@contextmanager
def fresh_schema(schema: str) -> Iterator[str]:
    """A warehouse URL whose search_path is the new PostgreSQL schema `schema`; the schema and the engines that
    used it are dropped afterwards. Skips the test without PostgreSQL."""
    _postgres_or_skip()
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"{PG_URL}?options=-csearch_path%3D{schema}"
    finally:
        from warehouse import engine as engines

        for key in [k for k in engines._engines if schema in k]:
            engines._engines.pop(key).dispose()
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A URL whose search_path is a fresh schema, dropped afterwards."""
    with fresh_schema(f"t_{uuid.uuid4().hex[:12]}") as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def warehouse_url(request: pytest.FixtureRequest) -> str:
    name = "sqlite_url" if request.param == "sqlite" else "postgres_url"
    return str(request.getfixturevalue(name))


@pytest.fixture(scope="session")
def prefect_harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The Prefect server the in-process flows of the tests talk to: a `candleflow server` of its own on a
    throwaway PostgreSQL database (no Automations: the flows' own hooks are under test). Prefect's SQLite-backed
    test harness stalled for a minute at a time under a full suite ("database is locked"); it remains the
    fallback without PostgreSQL."""
    try:
        _postgres_or_skip()
    except pytest.skip.Exception:
        from prefect.testing.utilities import prefect_test_harness

        with prefect_test_harness(server_startup_timeout=180):
            yield
        return
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from tests.team_server import team_server

    with team_server(tmp_path_factory.mktemp("harness")) as server, temporary_settings({PREFECT_API_URL: server.api}):
        yield


@pytest.fixture
def files(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The local S3 server holding flat files in the vendor's layout, its settings in the environment."""
    from tests.flatfiles_server import flatfiles_stand_in

    with flatfiles_stand_in() as stand_in:
        for name, value in stand_in.env().items():
            monkeypatch.setenv(name, value)
        yield stand_in


def count(url: str, sql: str) -> int:
    from warehouse.engine import get_engine

    with get_engine(url).connect() as conn:
        return int(conn.execute(sa.text(sql)).scalar() or 0)


@pytest.fixture(scope="session")
def team(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A real, lasting Prefect server (`candleflow server`) backed by a throwaway PostgreSQL database."""
    _postgres_or_skip()
    from tests.team_server import team_server

    with team_server(tmp_path_factory.mktemp("team")) as server:
        yield server


@pytest.fixture(scope="session")
def receiver() -> Iterator[Any]:
    """A local HTTP receiver standing in for the team's webhook: it keeps every notice POSTed to it."""
    from tests.team_server import notice_receiver

    with notice_receiver() as notices:
        yield notices


@pytest.fixture(scope="session")
def team_warehouse() -> Iterator[str]:
    """A PostgreSQL warehouse (a fresh schema) for the deployed runs, dropped at the end of the session."""
    with fresh_schema(f"t_team_{uuid.uuid4().hex[:8]}") as url:
        yield url


@pytest.fixture(scope="session")
def deployed(team: Any, receiver: Any, team_warehouse: str) -> Iterator[Any]:
    """`candleflow setup` (twice), `prefect deploy --all` from the repository root, and `candleflow worker`, as the
    README says, against the team server; notices go to `receiver`, runs write to `team_warehouse`."""
    from tests.team_server import BIN, Deployed, run_command, stop

    env = team.env(CANDLEFLOW_NOTIFY_WEBHOOK_URL=receiver.url)
    setup = [str(BIN / "candleflow"), "setup", "--crash-after-seconds", "40"]
    first = run_command(setup, env)
    # a limit a user set to their plan: the second set-up keeps it and says so (restored afterwards)
    polygon = f"{team.api}/v2/concurrency_limits/candleflow-provider-polygon"
    httpx.patch(polygon, json={"limit": 2, "slot_decay_per_second": 2.0}, timeout=30).raise_for_status()
    second = run_command(setup, env)
    httpx.patch(polygon, json={"limit": 5, "slot_decay_per_second": 5.0}, timeout=30).raise_for_status()
    deploy = run_command([str(BIN / "prefect"), "--no-prompt", "deploy", "--all"], env)
    assert deploy.returncode == 0, deploy.stdout + deploy.stderr
    log = team.home / "worker.log"
    with log.open("wb") as out:
        worker = subprocess.Popen(
            [str(BIN / "candleflow"), "worker"],
            env=team.env(
                CANDLEFLOW_WAREHOUSE_URL=team_warehouse,
                CANDLEFLOW_NOTIFY_WEBHOOK_URL=receiver.url,
                # asks for new runs every second, not every 10 s: each run a test starts waited up to 10 s here
                PREFECT_WORKER_QUERY_SECONDS="1",
            ),
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield Deployed(first, second, deploy, worker, log)
    finally:
        stop(worker)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """The fault-injection scenarios and what each ended in (the README's table comes from this)."""
    from tests.fault_table import table

    lines = table()
    if lines:
        terminalreporter.section("fault injection: scenarios and outcomes")
        for line in lines:
            terminalreporter.write_line(line)
