"""Which errors the chunk task retries: only those a retry can help, judged by class, never by message."""

import sqlite3
from pathlib import Path

import pandas as pd
import psycopg
import pytest
import sqlalchemy as sa

from candleflow.errors import BadInputError
from ingest.retry import is_transient
from providers.errors import TerminalProviderError, TransientProviderError

WINDOW = (pd.Timestamp("2024-01-01", tz="UTC"), pd.Timestamp("2024-02-01", tz="UTC"))


def test_provider_errors_by_class() -> None:
    assert is_transient(TransientProviderError("HTTP 503", provider="p", window=WINDOW, http_status=503))
    assert not is_transient(TerminalProviderError("HTTP 401: check the key", provider="p", http_status=401))


def test_a_locked_sqlite_warehouse_is_not_retried(tmp_path: Path) -> None:
    """The busy timeout already was the wait (CANDLEFLOW_WAREHOUSE_BUSY_TIMEOUT_SECONDS): retrying it only
    multiplies it; the run stops saying who holds the file (tests/test_trust2_warehouse.py)."""
    path = tmp_path / "locked.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN EXCLUSIVE")
    engine = sa.create_engine(f"sqlite:///{path}", connect_args={"timeout": 0.1})
    with pytest.raises(sa.exc.OperationalError) as info, engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO t VALUES (1)")
    holder.close()
    assert "locked" in str(info.value) and not is_transient(info.value)


def test_an_unreachable_postgres_is_transient_but_a_constraint_violation_is_not(postgres_url: str) -> None:
    down = sa.create_engine("postgresql+psycopg://postgres@127.0.0.1:1/test", connect_args={"connect_timeout": 2})
    with pytest.raises(sa.exc.OperationalError) as info, down.connect():
        pass
    assert is_transient(info.value)
    engine = sa.create_engine(postgres_url)
    with pytest.raises(sa.exc.IntegrityError) as violation, engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE k (x int PRIMARY KEY)")
        conn.exec_driver_sql("INSERT INTO k VALUES (1), (1)")
    assert isinstance(violation.value.orig, psycopg.errors.UniqueViolation) and not is_transient(violation.value)
    engine.dispose()


def test_bad_input_and_bugs_are_not_retried() -> None:
    assert not is_transient(BadInputError("unknown timeframe '2h'"))
    assert not is_transient(KeyError("volume"))
