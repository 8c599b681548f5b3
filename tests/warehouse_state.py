"""What two warehouses must share to be the same: every bar (values as stored) and the ledger's series, windows,
statuses and row counts."""

from __future__ import annotations

import pandas as pd
import sqlalchemy as sa

from warehouse.engine import get_engine


def warehouse_state(url: str) -> tuple[pd.DataFrame, list[tuple[str, str, str, str, int | None]]]:
    """The bars (sorted, values as stored) and the ledger's (series, window, status, rows): what must match."""
    with get_engine(url).connect() as conn:
        bars = pd.read_sql(sa.text("SELECT * FROM bars ORDER BY provider, symbol, timeframe, ts"), conn)
        ledger = conn.execute(
            sa.text(
                'SELECT provider, symbol, timeframe, window_start, status, "rows" FROM ingest_ledger '
                "ORDER BY provider, symbol, timeframe, window_start"
            )
        ).all()
    bars["ts"] = pd.to_datetime(bars["ts"], utc=True)
    return bars, [(r[0], r[1], r[2], str(pd.Timestamp(r[3]).date()), r[4], r[5]) for r in ledger]  # type: ignore[misc]


def assert_same_warehouse(url: str, reference: str) -> None:
    bars, ledger = warehouse_state(url)
    clean_bars, clean_ledger = warehouse_state(reference)
    pd.testing.assert_frame_equal(bars, clean_bars, check_dtype=False)
    assert ledger == clean_ledger
