"""The warehouse's errors in one line that names the cause and the fix: never a statement or its parameters
(SQLAlchemy's `str(exc)` carries both, and a ledger row, a summary or a notice must not).

CandleflowError
└── WarehouseError                  a statement failed: this chunk cannot be loaded (a constraint, a bug)
    ├── WarehouseConnectionError    the connection dropped or timed out: a retry may get a new one
    └── WarehouseUnusableError      every statement will fail the same way until someone acts (disk full, file
                                    locked by another process, read-only, no permission): the run stops

`explain` is the one place that maps a DBAPI error (SQLite, psycopg, oracledb; bare or wrapped by SQLAlchemy)
to one of these. Callers decide by class, never by message text.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import sqlalchemy as sa

from candleflow.errors import CandleflowError
from warehouse.dialects import oracle_connect


class WarehouseError(CandleflowError):
    """A warehouse statement failed; the message is one line: the cause, then what to do."""


class WarehouseConnectionError(WarehouseError):
    """The connection to the warehouse dropped, was ended or timed out: a retry may get a new one."""


class WarehouseUnusableError(WarehouseError):
    """The warehouse refuses every write the same way until someone acts: stop the run, do not retry."""


_RERUN = "then run the same command again: it fetches only what did not load"
_LOCKED = (
    "the database file is locked by another process (another candleflow run, or a program holding a write "
    "transaction open, such as a database browser): let it finish or close it, " + _RERUN + "; "
    "CANDLEFLOW_WAREHOUSE_BUSY_TIMEOUT_SECONDS waits longer"
)
_DISK_FULL = f"database or disk is full: free space on the disk holding the database file, {_RERUN}"
_SERVER_FULL = (
    "the database server's disk is full ({detail}): free space there or ask the DBA to, " + _RERUN + "; "
    "committed chunks stay"
)
_CLOSED = (
    "the database closed the connection ({detail}): check that the server is up and that nothing ends "
    "candleflow's sessions (pg_terminate_backend, an idle timeout, a proxy), " + _RERUN
)

# SQLite result codes (the primary code: the low byte of an extended one)
_SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_READONLY, _SQLITE_IOERR = 5, 6, 8, 10
_SQLITE_CORRUPT, _SQLITE_FULL, _SQLITE_CANTOPEN, _SQLITE_NOTADB = 11, 13, 14, 26


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0].strip() if text else type(error).__name__


def _sqlite(error: sqlite3.Error) -> WarehouseError | None:
    code = getattr(error, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    text = _first_line(error)
    if primary in (_SQLITE_BUSY, _SQLITE_LOCKED) or "database is locked" in text:
        return WarehouseUnusableError(_LOCKED)
    if primary == _SQLITE_FULL:
        return WarehouseUnusableError(_DISK_FULL)
    if primary == _SQLITE_READONLY:
        return WarehouseUnusableError(
            f"the database file is read-only ({text}): give this user write access to the file and its folder, "
            "or fix --warehouse or CANDLEFLOW_WAREHOUSE_URL"
        )
    if primary in (_SQLITE_NOTADB, _SQLITE_CORRUPT):
        return WarehouseUnusableError(
            f"the file is not a usable SQLite database ({text}): point --warehouse or CANDLEFLOW_WAREHOUSE_URL at "
            "a candleflow warehouse or a new file"
        )
    if primary in (_SQLITE_IOERR, _SQLITE_CANTOPEN):
        return WarehouseUnusableError(f"the database file cannot be read or written ({text}): check its disk")
    return None


def _postgres(error: Exception) -> WarehouseError | None:
    import psycopg

    if not isinstance(error, psycopg.Error):
        return None
    sqlstate = error.sqlstate or ""
    text = _first_line(error)
    if sqlstate == "53100" or "No space left on device" in text:
        return WarehouseUnusableError(_SERVER_FULL.format(detail=text))
    if sqlstate == "42501":
        return WarehouseUnusableError(
            f"permission denied ({text}): grant the warehouse user INSERT, UPDATE, SELECT and DELETE on candleflow's "
            "tables (and CREATE on the schema for a new warehouse)"
        )
    if sqlstate == "25006":
        return WarehouseUnusableError(
            f"the database is read-only ({text}): point --warehouse or CANDLEFLOW_WAREHOUSE_URL at the primary server"
        )
    if "timeout expired" in text:
        return WarehouseConnectionError(
            f"no answer from the database server ({text}): check the host and port, and that a PostgreSQL server "
            "answers there (CANDLEFLOW_WAREHOUSE_CONNECT_TIMEOUT_SECONDS waits longer)"
        )
    if text.startswith("connection failed"):  # refused, unknown host, authentication: the message says which
        return WarehouseConnectionError(text)
    if sqlstate.startswith(("08", "57P")) or (isinstance(error, psycopg.OperationalError) and not sqlstate):
        return WarehouseConnectionError(_CLOSED.format(detail=text))
    return None


def _oracle(error: Exception) -> WarehouseError | None:
    if type(error).__module__.split(".")[0] != "oracledb":
        return None
    text = _first_line(error)
    code = text.split(":", 1)[0].strip()
    if code in ("ORA-01653", "ORA-01654", "ORA-01688", "ORA-01536", "ORA-01950"):
        return WarehouseUnusableError(f"the tablespace is full or over quota ({text}): ask the DBA for space, {_RERUN}")
    if code in ("ORA-03113", "ORA-03114", "ORA-03135", "DPY-4011", "DPY-1001"):
        return WarehouseConnectionError(_CLOSED.format(detail=text))
    fix = oracle_connect.explain(error)
    return WarehouseError(fix) if fix else None


_DRIVERS: tuple[Callable[[Exception], WarehouseError | None], ...] = (_postgres, _oracle)


def explain(error: BaseException) -> WarehouseError | None:
    """The one-line warehouse error for a database error (bare or wrapped by SQLAlchemy), classed by what to do
    about it; None for anything that is not a database error."""
    if isinstance(error, WarehouseError):
        return error
    if isinstance(error, sa.exc.DBAPIError):
        original: BaseException | None = error.orig
    elif isinstance(error, sqlite3.Error) or type(error).__module__.split(".")[0] in ("psycopg", "oracledb"):
        original = error
    else:
        return None
    if isinstance(original, sqlite3.Error):
        found = _sqlite(original)
    else:
        found = next((e for e in (d(original) for d in _DRIVERS) if e is not None), None) if original else None  # type: ignore[arg-type]
    if found is not None:
        return found
    shown = original if original is not None else error
    line = f"{type(shown).__name__}: {_first_line(shown)}"
    connection_broke = isinstance(error, sa.exc.OperationalError | sa.exc.InterfaceError) and not isinstance(
        error, sa.exc.IntegrityError
    )
    return WarehouseConnectionError(line) if connection_broke else WarehouseError(line)


def describe(error: BaseException) -> str:
    """One line for a summary, a ledger row or a notice: a database error as `explain` puts it, anything else as
    `Type: message` (as before)."""
    explained = explain(error)
    return str(explained) if explained is not None else f"{type(error).__name__}: {error}"


@contextmanager
def one_line_errors() -> Iterator[None]:
    """Raise a database error inside as its one-line WarehouseError (its statement and parameters dropped)."""
    try:
        yield
    except sa.exc.DBAPIError as exc:
        explained = explain(exc)
        if explained is None:
            raise
        raise explained from None
