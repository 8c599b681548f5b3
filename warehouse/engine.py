"""Warehouse URLs and engines: parse, normalise, check reachability with errors that say what to fix."""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
import threading
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError

from candleflow.errors import BadInputError
from candleflow.settings import warehouse_settings
from warehouse import databases
from warehouse.dialects import DIALECTS, Dialect, dialect_for
from warehouse.dialects.sqlite import sqlite_path
from warehouse.errors import WarehouseConnectionError, explain

DEFAULT_URL = "sqlite:///candleflow.db"
URL_ENV = "CANDLEFLOW_WAREHOUSE_URL"
PASSWORD_ENV = "CANDLEFLOW_WAREHOUSE_PASSWORD"
_HINT = "fix --warehouse or CANDLEFLOW_WAREHOUSE_URL"
_engines: dict[str, sa.Engine] = {}
_engines_lock = threading.Lock()


def resolve_url(url: str | None) -> str:
    """The URL to use: the argument, else CANDLEFLOW_WAREHOUSE_URL, else the SQLite default."""
    return url or warehouse_settings().url or DEFAULT_URL


def parse_url(url: str) -> URL:
    """Parse a SQLAlchemy URL; plain postgresql:// means psycopg 3, the driver candleflow ships with."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise BadInputError(
            f"warehouse URL {masked(url)!r} is not a SQLAlchemy URL: use e.g. sqlite:///candleflow.db or "
            f"postgresql+psycopg://user@host:5432/db ({_HINT})"
        ) from None
    except ValueError:  # SQLAlchemy parses the port with int()
        raise BadInputError(
            f"warehouse URL {masked(url)!r}: the port is not a number: write host:5432 ({_HINT})"
        ) from None
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.drivername == "oracle":
        parsed = parsed.set(drivername="oracle+oracledb")
    if parsed.get_backend_name() not in ("sqlite", "postgresql", "oracle"):
        raise BadInputError(
            f"warehouse URL {safe_url(parsed)}: {parsed.get_backend_name()!r} is not supported; "
            f"use sqlite, postgresql or oracle ({_HINT})"
        )
    return parsed


def masked(url: str) -> str:
    """A URL that could not be parsed, with whatever stands in a password's place replaced by ***: everything
    between the user name's colon and the last @ (a password may hold : / or @)."""
    if "@" not in url:
        return url
    head, host = url.rsplit("@", 1)
    slashes = head.find("//")
    start = slashes + 2 if slashes >= 0 else 0
    if ":" not in head[start:]:
        return url
    user = head[start:].split(":", 1)[0]
    return f"{head[:start]}{user}:***@{host}"


def without_password(url: str) -> tuple[str, str | None]:
    """`url` with its password taken out, and the password (None when it has none): what may become a Prefect
    parameter, and what may not. A URL that does not parse is returned as it is (the checks refuse it)."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        return url, None
    if parsed.password is None:
        return url, None
    return parsed._replace(password=None).render_as_string(hide_password=False), str(parsed.password)


def has_password(url: str) -> bool:
    return without_password(url)[1] is not None


def with_password(url: URL) -> URL:
    """A URL naming a user but no password gets it from where this process runs, never from a parameter:
    $CANDLEFLOW_WAREHOUSE_PASSWORD, else $CANDLEFLOW_WAREHOUSE_URL when that names the same user and database
    with a password."""
    if not url.username or url.password is not None:
        return url
    settings = warehouse_settings()
    password = settings.password.get_secret_value() if settings.password is not None else None
    if not password and settings.url:
        try:
            env = parse_url(settings.url)
        except BadInputError:
            return url
        same = ("drivername", "username", "host", "port", "database")
        if all(getattr(env, part) == getattr(url, part) for part in same):
            password = env.password
    return url.set(password=password) if password else url


def safe_url(url: URL | str) -> str:
    parsed = url if isinstance(url, URL) else make_url(url)
    return parsed.render_as_string(hide_password=True)


def _dialect(url: URL) -> Dialect:
    return DIALECTS[url.get_backend_name()]()


def _connect_arguments(url: URL) -> dict[str, Any]:
    """The driver's connect arguments for `url` (its dialect's, with a bounded connect)."""
    timeout = warehouse_settings().connect_timeout_seconds
    return dict(_dialect(url).engine_arguments(url, timeout).get("connect_args", {}))


def get_engine(url: str | None = None) -> sa.Engine:
    """One engine per warehouse URL per process (engines are thread-safe and pool connections)."""
    parsed = with_password(parse_url(resolve_url(url)))
    path = sqlite_path(parsed) if parsed.get_backend_name() == "sqlite" else None
    if path is not None and not path.is_absolute():
        # `sqlite:///candleflow.db` means the file in the working directory *now*: pin it, so an engine made in
        # another directory (a long-lived worker, a test that changed directory) is never reused for this one.
        parsed = parsed.set(database=str(path.resolve()))
    key = parsed.render_as_string(hide_password=False)
    with _engines_lock:
        engine = _engines.get(key)
        if engine is None:
            dialect = _dialect(parsed)
            arguments = dialect.engine_arguments(parsed, warehouse_settings().connect_timeout_seconds)
            try:
                engine = sa.create_engine(parsed, pool_pre_ping=True, **arguments)
            except NoSuchModuleError as exc:
                raise BadInputError(f"warehouse URL {safe_url(parsed)}: no driver ({exc}); {_HINT}") from None
            dialect.configure(engine)
            if engine.dialect.name == "sqlite":
                _checkpoint_at_exit()
            _engines[key] = engine
    return engine


@functools.cache
def _checkpoint_at_exit() -> None:
    atexit.register(checkpoint_all)


def checkpoint(engine: sa.Engine, *, wait_seconds: float = 0.0) -> None:
    """The warehouse's file alone holds every committed bar (SQLite's write-ahead log copied into it; see
    SqliteDialect.checkpoint). Nothing to do for other databases."""
    dialect_for(engine).checkpoint(engine, wait_seconds=wait_seconds)


def checkpoint_all() -> None:
    """At exit: checkpoint every SQLite warehouse this process used and close its connections."""
    with _engines_lock:
        engines = [e for e in _engines.values() if e.dialect.name == "sqlite"]  # the others have nothing to copy
    for engine in engines:
        with contextlib.suppress(Exception):
            checkpoint(engine, wait_seconds=2.0)
            engine.dispose()


def check_reachable(url: str | None = None, *, writes: bool = False) -> sa.Engine:
    """Fail with one clear line if the warehouse cannot be used: unreachable, silent, a PostgreSQL database that
    is missing and may not be created, a table of candleflow's names that is not candleflow's, or (`writes`) a
    SQLite file another process holds locked. Writes nothing (a new SQLite file or database included)."""
    parsed = parse_url(resolve_url(url))
    path = sqlite_path(parsed) if parsed.get_backend_name() == "sqlite" else None
    if path is not None:
        folder = path.resolve().parent
        if not folder.is_dir():
            raise BadInputError(f"warehouse {safe_url(parsed)}: folder {folder} does not exist; create it or {_HINT}")
        if not os.access(folder, os.W_OK):
            raise BadInputError(f"warehouse {safe_url(parsed)}: folder {folder} is not writable; {_HINT}")
        engine = get_engine(url)
        if path.exists():
            _probe(engine, parsed, writes=writes)
        return engine
    engine = get_engine(url)
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    except DBAPIError as exc:
        if databases.is_missing_database(exc):
            if databases.may_create(parsed, _connect_arguments(parsed)):
                return engine  # the run's first load creates it (ensure_database)
            raise databases.missing_database_error(parsed) from None
        fix = _dialect(parsed).explain_connect_error(exc)
        if fix is not None:
            raise BadInputError(f"cannot use warehouse {safe_url(parsed)}: {fix}") from None
        raise _unusable(parsed, exc) from None
    _probe(engine, parsed, writes=False)
    return engine


def _unusable(url: URL, error: DBAPIError) -> BadInputError:
    explained = explain(error)
    if isinstance(explained, WarehouseConnectionError):
        return BadInputError(f"cannot reach warehouse {safe_url(url)}: {explained}; {_HINT}")
    return BadInputError(f"cannot use warehouse {safe_url(url)}: {explained}")


def _probe(engine: sa.Engine, url: URL, *, writes: bool) -> None:
    """Candleflow's tables, if present, are candleflow's; with `writes`, a write transaction can start (SQLite:
    no other process holds the file locked beyond the busy timeout). Checked once per engine while it holds them."""
    from warehouse.schema import check_tables

    try:
        if writes:
            with engine.begin():  # BEGIN IMMEDIATE on SQLite (see SqliteDialect.configure), then COMMIT: writes nothing
                pass
        elif engine.dialect.name == "sqlite":  # a transaction starts as above: a locked file is found even where
            with engine.connect() as conn:  # check_tables asks nothing (tables this process checked or made)
                conn.exec_driver_sql("SELECT 1")
        check_tables(engine)
    except DBAPIError as exc:
        raise _unusable(url, exc) from None


def ensure_database(url: str | None = None) -> bool:
    """Create a PostgreSQL warehouse's missing database (when its role may); True when this call created it."""
    parsed = parse_url(resolve_url(url))
    if parsed.get_backend_name() != "postgresql":
        return False
    try:
        with get_engine(url).connect() as conn:
            conn.exec_driver_sql("SELECT 1")
        return False
    except DBAPIError as exc:
        if not databases.is_missing_database(exc):
            raise
    created = databases.create_database(parsed, _connect_arguments(parsed))
    get_engine(url).dispose()  # its pool may hold a failed first attempt
    return created
