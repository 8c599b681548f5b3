"""Shared fixtures: real warehouses (a SQLite file; a fresh PostgreSQL schema on 127.0.0.1:5432) and one
session-wide Prefect test harness for the flow tests."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

os.environ.update(
    PREFECT_SERVER_ANALYTICS_ENABLED="false",
    DO_NOT_TRACK="1",
    PREFECT_SERVER_LOGGING_LEVEL="CRITICAL",
    GX_ANALYTICS_ENABLED="false",
    CANDLEFLOW_RETRY_BACKOFF_SECONDS="0",  # retries stay real, they just do not sleep in tests
    CANDLEFLOW_RETRY_JITTER_FACTOR="0",
    PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="180",
)
os.environ.pop("CANDLEFLOW_WAREHOUSE_URL", None)

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


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A URL whose search_path is a fresh schema, dropped afterwards."""
    _postgres_or_skip()
    schema = f"t_{uuid.uuid4().hex[:12]}"
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


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def warehouse_url(request: pytest.FixtureRequest) -> str:
    name = "sqlite_url" if request.param == "sqlite" else "postgres_url"
    return str(request.getfixturevalue(name))


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


def count(url: str, sql: str) -> int:
    from warehouse.engine import get_engine

    with get_engine(url).connect() as conn:
        return int(conn.execute(sa.text(sql)).scalar() or 0)
