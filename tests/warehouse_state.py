"""What two warehouses must share to be the same: every bar (values as stored) and the ledger's series, windows,
statuses and row counts."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import sqlalchemy as sa

from warehouse.engine import get_engine


def warehouse_state(
    url: str, symbols: Sequence[str] | None = None
) -> tuple[pd.DataFrame, list[tuple[str, str, str, str, int | None]]]:
    """The bars (sorted, values as stored) and the ledger's (series, window, status, rows): what must match; of
    `symbols` only, when given (a warehouse other tests write to as well)."""
    where, params = "", {}
    if symbols is not None:
        where, params = "WHERE symbol IN :symbols ", {"symbols": list(symbols)}

    def query(sql: str) -> sa.TextClause:
        return sa.text(sql).bindparams(sa.bindparam("symbols", expanding=True)) if where else sa.text(sql)

    with get_engine(url).connect() as conn:
        bars = pd.read_sql(
            query(f"SELECT * FROM bars {where}ORDER BY provider, symbol, timeframe, ts"), conn, params=params
        )
        ledger = conn.execute(
            query(
                f'SELECT provider, symbol, timeframe, window_start, status, "rows" FROM ingest_ledger {where}'
                "ORDER BY provider, symbol, timeframe, window_start"
            ),
            params,
        ).all()
    bars["ts"] = pd.to_datetime(bars["ts"], utc=True)
    return bars, [(r[0], r[1], r[2], str(pd.Timestamp(r[3]).date()), r[4], r[5]) for r in ledger]  # type: ignore[misc]


def assert_same_warehouse(url: str, reference: str, symbols: Sequence[str] | None = None) -> None:
    bars, ledger = warehouse_state(url, symbols)
    clean_bars, clean_ledger = warehouse_state(reference, symbols)
    pd.testing.assert_frame_equal(bars, clean_bars, check_dtype=False)
    assert ledger == clean_ledger
