"""Daily updates of many series, as flow runs in a temporary Prefect server: the time of a new day's update and
of a rerun that finds nothing new, and the ledger rows before and after each (an update extends its series' rows
instead of adding any). Not a test: it prints numbers.

    .venv/bin/python bench/update_bench.py [--symbols 500] [--url postgresql+psycopg://postgres@127.0.0.1/updbench]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import tempfile
import time

import sqlalchemy as sa

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_LOGGING_LEVEL", "CRITICAL")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=500)
    parser.add_argument("--url", help="an empty warehouse (default: a new SQLite file)")
    args = parser.parse_args()
    url = args.url or f"sqlite:///{tempfile.mkdtemp()}/update-bench.db"
    from prefect.testing.utilities import prefect_test_harness

    symbols = [f"S{i:03d}" for i in range(args.symbols)]
    with prefect_test_harness():
        from flows.backfill import historical_backfill
        from flows.incremental import incremental_update
        from warehouse.engine import get_engine

        def ledger_rows() -> int:
            with get_engine(url).connect() as conn:
                return int(conn.execute(sa.text("SELECT count(*) FROM ingest_ledger")).scalar_one())

        historical_backfill(symbols=symbols, start=dt.date(2024, 1, 2), end=dt.date(2024, 6, 28), warehouse_url=url)
        incremental_update(symbols=symbols, end=dt.date(2024, 7, 1), warehouse_url=url)  # warm: imports, the suite
        print(f"{args.symbols} daily series, {url.split(':')[0]}")
        for label, day in (
            ("new day", dt.date(2024, 7, 2)),
            ("new day", dt.date(2024, 7, 3)),
            ("rerun", dt.date(2024, 7, 3)),
        ):
            before = ledger_rows()
            started = time.perf_counter()
            summary = incremental_update(symbols=symbols, end=day, warehouse_url=url)
            seconds = time.perf_counter() - started
            print(
                f"{label:8} {day}: flow run {seconds:5.2f} s, {summary.bars_written} bars written, "
                f"ledger rows {before} -> {ledger_rows()}",
                flush=True,
            )


if __name__ == "__main__":
    main()
