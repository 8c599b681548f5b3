"""Each database's quirks, one class per dialect (base.Dialect says what each provides): how it connects (driver
arguments, each session's set-up, the errors its driver names), how the schema is changed when runs start
together, its limit on IN-lists, SQLite's checkpoint, the SQL for UTC dates, and the bulk load:

| dialect    | bars                                                            | ledger upsert       |
|------------|-----------------------------------------------------------------|---------------------|
| sqlite     | executemany `INSERT ... ON CONFLICT DO UPDATE`                   | ON CONFLICT         |
| postgresql | binary COPY; straight into `bars` when the window holds no bar,  | ON CONFLICT         |
|            | else into a temp staging table, then `INSERT ... ON CONFLICT`   |                     |
| oracle     | array-bound executemany into a global temporary staging table, | MERGE from dual     |
|            | then one MERGE (see oracle.py)                                  |                     |

Each then deletes the window's bars the load lacks (the source dropped them): SQLite only when a count of the
window says there are any, PostgreSQL and Oracle against their staging table.
"""

from __future__ import annotations

import sqlalchemy as sa

from warehouse.dialects.base import Dialect
from warehouse.dialects.oracle import OracleDialect
from warehouse.dialects.postgres import PostgresDialect
from warehouse.dialects.sqlite import SqliteDialect

DIALECTS: dict[str, type[Dialect]] = {
    "sqlite": SqliteDialect,
    "postgresql": PostgresDialect,
    "oracle": OracleDialect,
}


def dialect_for(engine: sa.Engine | sa.Connection) -> Dialect:
    return DIALECTS[engine.dialect.name]()


__all__ = ["DIALECTS", "Dialect", "dialect_for"]
