"""Load 1,000,000 synthetic 1m bars into PostgreSQL several ways and print rows/s side by side.

    make bench                       # uses postgresql+psycopg://postgres@127.0.0.1:5432/test
    make bench BENCH_ARGS="--rows 200000 --to-sql-rows 1000000"

Cases (all into a table keyed like `bars`, in a scratch schema dropped afterwards):
- floor:          one binary COPY of pre-encoded rows into an empty keyed table (encoding not counted)
- ours fresh:     candleflow's load path (checksum, ledger check, COPY or stage+upsert, ledger row) per chunk
- ours changed:   the same chunks again with every row's values changed
- ours unchanged: the same chunks again, unchanged (checksum matches the ledger: nothing written)
- to_sql:         pandas DataFrame.to_sql(method="multi", chunksize=1000) into an empty keyed table
- dlt merge:      dlt's postgres destination, write_disposition="merge" on the same key
Not a test: it asserts nothing and prints numbers.
"""

from __future__ import annotations

import argparse
import os
import time
import uuid
from collections.abc import Callable

import pandas as pd
import psycopg
import sqlalchemy as sa

from candleflow.checksum import frame_checksum
from candleflow.model import BAR_COLUMNS, Chunk
from candleflow.planning import period_windows
from candleflow.timeframes import ChunkPeriod, get_timeframe
from providers import get_provider
from providers.base import FetchRequest
from warehouse.dialects import pgcopy
from warehouse.engine import get_engine
from warehouse.load import load_chunk
from warehouse.schema import ensure_schema

SYMBOLS = [f"S{i:03d}" for i in range(200)]
KEYED_TABLE = """CREATE TABLE {name} (provider varchar(32), symbol varchar(32), timeframe varchar(8), ts timestamptz,
 open float8 NOT NULL, high float8 NOT NULL, low float8 NOT NULL, close float8 NOT NULL, volume float8 NOT NULL,
 vwap float8, trades int8, PRIMARY KEY (provider, symbol, timeframe, ts))"""


def make_chunks(rows: int) -> list[tuple[Chunk, pd.DataFrame]]:
    """Whole symbol-months of synthetic 1m bars (2023) until `rows`; the last chunk is cut to fit exactly."""
    provider = get_provider("synthetic")
    tf = get_timeframe("1m")
    months = period_windows(
        pd.Timestamp("2023-01-01", tz="UTC"), pd.Timestamp("2024-01-01", tz="UTC"), ChunkPeriod.MONTH
    )
    out: list[tuple[Chunk, pd.DataFrame]] = []
    total = 0
    for symbol in SYMBOLS:
        for start, end in months:
            frame = provider.fetch(FetchRequest((symbol,), tf, start, end)).bars
            frame = frame.iloc[: rows - total]
            out.append((Chunk("synthetic", symbol, "1m", start, end), frame))
            total += len(frame)
            if total >= rows:
                return out
    return out


def timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument(
        "--to-sql-rows",
        type=int,
        default=100_000,
        help="rows for the to_sql case (it runs ~6k rows/s: 1M takes minutes)",
    )
    parser.add_argument("--skip-dlt", action="store_true")
    parser.add_argument(
        "--url",
        default=os.environ.get("CANDLEFLOW_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"),
    )
    args = parser.parse_args()

    schema = f"bench_{uuid.uuid4().hex[:8]}"
    base = sa.engine.make_url(args.url)
    dsn = base.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    url = f"{args.url}?options=-csearch_path%3D{schema}"
    results: list[tuple[str, int, float]] = []
    try:
        t = time.perf_counter()
        chunks = make_chunks(args.rows)
        frames = pd.concat([f for _, f in chunks], ignore_index=True)
        n = len(frames)
        print(f"generated {n:,} bars in {len(chunks)} symbol-month chunks in {time.perf_counter() - t:.1f} s")

        engine = get_engine(url)
        ensure_schema(engine)
        raw = psycopg.connect(dsn, autocommit=False, options=f"-csearch_path={schema}")

        # floor: one COPY of pre-encoded rows into an empty keyed table
        payloads = [
            pgcopy.encode(pgcopy.frame_columns(f, (c.provider, c.symbol, c.timeframe)), len(f)) for c, f in chunks
        ]
        raw.execute(KEYED_TABLE.format(name="floor_bars"))
        raw.commit()

        def copy_floor() -> None:
            with (
                raw.cursor() as cur,
                cur.copy(f"COPY floor_bars ({', '.join(BAR_COLUMNS)}) FROM STDIN (FORMAT BINARY)") as cp,
            ):
                cp.write(pgcopy.HEADER)
                for payload in payloads:
                    cp.write(payload[len(pgcopy.HEADER) : -len(pgcopy.TRAILER)])
                cp.write(pgcopy.TRAILER)
            raw.commit()

        results.append(("binary COPY into empty keyed table (floor)", n, timed(copy_floor)))

        def ours(parts: list[tuple[Chunk, pd.DataFrame]]) -> Callable[[], None]:
            def run() -> None:
                for chunk, frame in parts:
                    load_chunk(engine, chunk, frame, checksum=frame_checksum(frame), flow_run_id="bench")

            return run

        results.append(("candleflow load, fresh", n, timed(ours(chunks))))
        changed = []
        for chunk, frame in chunks:
            f = frame.copy()
            f["close"] = (f["close"] * 1.001).round(4)
            f["high"] = f[["high", "close"]].max(axis=1)
            f["volume"] = f["volume"] + 1
            changed.append((chunk, f))
        results.append(("candleflow load, every row changed", n, timed(ours(changed))))
        results.append(("candleflow load, unchanged (checksum hit)", n, timed(ours(changed))))
        with psycopg.connect(dsn, autocommit=True, options=f"-csearch_path={schema}") as conn:
            conn.execute("VACUUM ANALYZE bars")  # what autovacuum does soon after a big write
        results.append(("candleflow load, unchanged, after VACUUM", n, timed(ours(changed))))
        with engine.connect() as conn:
            stored = conn.execute(sa.text("SELECT count(*), sum(volume) FROM bars")).one()
        assert stored[0] == n and stored[1] == float(frames["volume"].sum() + n), "bench load lost or kept bars"

        # pandas to_sql, what users do today
        raw.execute(KEYED_TABLE.format(name="to_sql_bars"))
        raw.commit()
        subset = frames.iloc[: args.to_sql_rows]
        to_sql_engine = sa.create_engine(url)
        results.append(
            (
                f"pandas to_sql(method='multi', chunksize=1000), {len(subset):,} rows",
                len(subset),
                timed(
                    lambda: subset.to_sql(
                        "to_sql_bars",
                        to_sql_engine,
                        if_exists="append",
                        index=False,
                        method="multi",
                        chunksize=1000,
                    )
                ),
            )
        )

        if not args.skip_dlt:
            import dlt

            pipeline = dlt.pipeline(
                pipeline_name=f"candleflow_bench_{schema}",
                dataset_name=f"{schema}_dlt",
                # dlt insists on a password; the trust-auth server ignores it
                destination=dlt.destinations.postgres(
                    credentials=base.set(drivername="postgresql", password=base.password or "unused").render_as_string(
                        hide_password=False
                    )
                ),
                pipelines_dir=f"/tmp/{schema}_dlt",
            )

            def dlt_merge() -> None:
                resource = dlt.resource(
                    frames,
                    name="bars",
                    write_disposition="merge",
                    primary_key=["provider", "symbol", "timeframe", "ts"],
                )
                pipeline.run(resource)

            results.append(("dlt merge (postgres destination)", n, timed(dlt_merge)))
        raw.close()
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
            conn.execute(f"DROP SCHEMA IF EXISTS {schema}_dlt CASCADE")
            conn.execute(f"DROP SCHEMA IF EXISTS {schema}_dlt_staging CASCADE")

    floor_rate = results[0][1] / results[0][2]
    fresh_seconds = results[1][2]
    print(f"\n{'case':<62} {'rows':>10} {'seconds':>8} {'rows/s':>10} {'x floor':>8}")
    for name, rows, seconds in results:
        rate = rows / seconds
        print(f"{name:<62} {rows:>10,} {seconds:>8.2f} {rate:>10,.0f} {rate / floor_rate:>8.2f}")
    print(
        f"\nunchanged reload cost: {100 * results[3][2] / fresh_seconds:.1f}% of the fresh load's time, "
        f"{100 * results[4][2] / fresh_seconds:.1f}% after VACUUM"
    )


if __name__ == "__main__":
    main()
