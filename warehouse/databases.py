"""A PostgreSQL warehouse whose database does not exist yet: created by the first run when its role may create
databases (as `candleflow server` does for the Prefect server's own), else one line with the `createdb` command."""

from __future__ import annotations

import re
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL

from candleflow.errors import BadInputError

_MISSING_DATABASE = "3D000"  # invalid_catalog_name: 'database "x" does not exist'
_DOES_NOT_EXIST = re.compile(r'FATAL:\s+database ".*" does not exist')
_HINT = "or fix --warehouse or CANDLEFLOW_WAREHOUSE_URL"


def is_missing_database(error: BaseException) -> bool:
    """The server answered that the URL's database does not exist (libpq gives a refused connection no SQLSTATE:
    its message says so)."""
    original = getattr(error, "orig", None) or error
    if getattr(original, "sqlstate", None) == _MISSING_DATABASE:
        return True
    return type(original).__module__.startswith("psycopg") and _DOES_NOT_EXIST.search(str(original)) is not None


def createdb_command(url: URL) -> str:
    """The shell command that creates the URL's database."""
    parts = ["createdb", "-h", url.host or "localhost", "-p", str(url.port or 5432)]
    if url.username:
        parts += ["-U", url.username]
    return " ".join([*parts, str(url.database)])


def may_create(url: URL, connect_args: dict[str, Any]) -> bool:
    """Whether the URL's role may create its database (CREATEDB or superuser), asked on the `postgres` database."""
    engine = sa.create_engine(url.set(database="postgres"), poolclass=sa.pool.NullPool, connect_args=connect_args)
    try:
        with engine.connect() as conn:
            allowed = conn.exec_driver_sql(
                "SELECT rolcreatedb OR rolsuper FROM pg_roles WHERE rolname = current_user"
            ).scalar()
        return bool(allowed)
    except sa.exc.DBAPIError:
        return False
    finally:
        engine.dispose()


def missing_database_error(url: URL) -> BadInputError:
    shown = url.render_as_string(hide_password=True)
    return BadInputError(
        f'warehouse {shown}: database "{url.database}" does not exist'
        f" and user {url.username or '(default)'} may "
        f"not create it: create it with `{createdb_command(url)}` (or CREATE DATABASE as an administrator), {_HINT}"
    )


def create_database(url: URL, connect_args: dict[str, Any]) -> bool:
    """Create the URL's database when it is missing (CREATE DATABASE from the `postgres` database); True when it
    was created. Two runs doing it at once: the second finds it there."""
    engine = sa.create_engine(
        url.set(database="postgres"),
        poolclass=sa.pool.NullPool,
        connect_args=connect_args,
        isolation_level="AUTOCOMMIT",
    )
    try:
        with engine.connect() as conn:
            if conn.exec_driver_sql("SELECT 1 FROM pg_database WHERE datname = %s", (url.database,)).scalar():
                return False
            name = engine.dialect.identifier_preparer.quote(str(url.database))
            try:
                conn.exec_driver_sql(f"CREATE DATABASE {name}")
            except sa.exc.ProgrammingError as exc:
                if getattr(exc.orig, "sqlstate", None) == "42P04":  # duplicate_database: another run made it
                    return False
                raise missing_database_error(url) from None
            return True
    except sa.exc.OperationalError:
        raise missing_database_error(url) from None
    finally:
        engine.dispose()
