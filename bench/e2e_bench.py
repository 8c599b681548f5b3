"""End-to-end: candleflow's backfills and updates side by side with the floor and with what a user would write.

    make bench-e2e                          # the full run (about 11 minutes on 2 cores, most of it the to_sql loops)
    make bench-e2e BENCH_ARGS="--quick"     # a tenth of the sizes, for a first look

Every workload is measured in one run against the same PostgreSQL (scratch databases, dropped afterwards):
- floor: one binary COPY of exactly the bars candleflow stores, pre-encoded, into an empty keyed table (best of 3);
- candleflow: `candleflow backfill` / `update` as a user runs them, each in a new process, against a lasting
  Prefect server started here (PostgreSQL-backed, `candleflow server` + `candleflow setup`, so the provider's
  rate limit and the warehouse's concurrency limit are in force; one small backfill run on it first, as a
  lasting server has run many), with the thread or the process task runner;
  the 1d backfill also through the CLI with its temporary server (the server's start shown apart);
- plain loop: what a user writes without candleflow: for each of the same chunks, fetch from the same
  provider, validate with the same suite, `DataFrame.to_sql(method="multi")` into a keyed table;
- dlt merge: the same fetched bars through dlt's postgres destination, `write_disposition="merge"` (fetching
  and validation not counted: dlt gets them for free);
- the whole market (`--only market`, bench/market_bench.py): `--symbols ALL` from generated vendor files at real
  width (a year of ~11,000-ticker day files, one ~2M-row minute file) on the local S3 server, and the same year
  through the grouped-daily stand-in, each with its floor, ledger rows and peak RSS;
- one backfill over a pool (`--only pool`, bench/pool_bench.py): a latency-bound one on 1, 2 and 4 workers, a
  CPU-bound one on 1 and 2 workers and with the thread, process and dask task runners.
Ratios are floor seconds / case seconds: 1.0 is as fast as the floor. Peak RSS is the process's own
(`wait4`). Not a test: it asserts only that each case stored the bars it should have.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import psycopg
import sqlalchemy as sa

from candleflow.model import BAR_COLUMNS, Chunk
from candleflow.planning import plan_chunks
from candleflow.timeframes import get_timeframe
from expectations import validate_bars
from providers import get_provider
from providers.base import FetchRequest
from warehouse.dialects import pgcopy

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
KEYED_TABLE = """CREATE TABLE {name} (provider varchar(32), symbol varchar(32), timeframe varchar(8), ts timestamptz,
 open float8 NOT NULL, high float8 NOT NULL, low float8 NOT NULL, close float8 NOT NULL, volume float8 NOT NULL,
 vwap float8, trades int8, PRIMARY KEY (provider, symbol, timeframe, ts))"""
PREFIX = "cf_bench_"


@dataclass
class Row:
    workload: str
    case: str
    bars: int
    seconds: float
    floor: float | None = None
    rss_mb: float | None = None
    note: str = ""

    @property
    def ratio(self) -> float | None:
        return self.floor / self.seconds if self.floor and self.seconds > 0 else None


@dataclass
class Workload:
    name: str
    timeframe: str
    symbols: list[str]
    start: dt.date
    end: dt.date
    chunks: list[Chunk] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.chunks = plan_chunks("synthetic", self.symbols, get_timeframe(self.timeframe), self.start, self.end)

    def fetch(self) -> Iterator[tuple[Chunk, pd.DataFrame]]:
        provider = get_provider("synthetic")
        tf = get_timeframe(self.timeframe)
        for chunk in self.chunks:
            yield chunk, provider.fetch(FetchRequest((chunk.symbol,), tf, chunk.window_start, chunk.window_end)).bars

    def cli_args(self) -> list[str]:
        return [
            "--provider",
            "synthetic",
            "--symbols",
            ",".join(self.symbols),
            "--timeframe",
            self.timeframe,
            "--start",
            self.start.isoformat(),
            "--end",
            self.end.isoformat(),
        ]


class Postgres:
    """Scratch databases on the bench's PostgreSQL, dropped at the end."""

    def __init__(self, base: str) -> None:
        self.base = sa.make_url(base)
        self.created: list[str] = []

    def dsn(self, database: str) -> str:
        url = self.base.set(drivername="postgresql", database=database)
        return url.render_as_string(hide_password=False)

    def url(self, database: str, driver: str = "postgresql+psycopg") -> str:
        return self.base.set(drivername=driver, database=database).render_as_string(hide_password=False)

    def fresh(self, name: str) -> str:
        database = PREFIX + re.sub(r"[^a-z0-9]+", "_", name.lower())
        with psycopg.connect(self.dsn("postgres"), autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
            conn.execute(f"CREATE DATABASE {database}")
        self.created.append(database)
        return database

    def count(self, database: str, table: str = "bars") -> int:
        with psycopg.connect(self.dsn(database)) as conn:
            return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])  # type: ignore[index]

    def drop_all(self) -> None:
        with psycopg.connect(self.dsn("postgres"), autocommit=True) as conn:
            for database in dict.fromkeys(self.created):
                conn.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def quiet_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API_URL", "CANDLEFLOW_"))}
    env["CANDLEFLOW_WARM_SOCKET"] = ""  # cold: a process of its own, whatever warm runner the user has
    env |= {
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PREFECT_SERVER_LOGGING_LEVEL": "CRITICAL",
        "GX_ANALYTICS_ENABLED": "false",
    }
    return env | extra


WARM_SOCKET = f"/tmp/candleflow-bench-{os.getpid()}/warm.sock"


@contextmanager
def warm_runner(api: str) -> Iterator[float]:
    """`candleflow warm` on a socket of the bench's own; yields how long it took to be ready."""
    env = quiet_env(PREFECT_API_URL=api) | {"CANDLEFLOW_WARM_SOCKET": WARM_SOCKET}
    started = time.perf_counter()
    runner = subprocess.Popen([str(BIN / "candleflow"), "warm"], env=env, stderr=subprocess.PIPE, text=True)
    assert runner.stderr is not None
    try:
        for line in runner.stderr:
            if "ready on" in line:
                break
        else:
            raise RuntimeError("the warm runner did not start")
        yield time.perf_counter() - started
    finally:
        runner.terminate()
        runner.wait(60)


@contextmanager
def lasting_server(pg: Postgres) -> Iterator[tuple[str, float]]:
    """`candleflow server` on a scratch PostgreSQL database, then `candleflow setup`: (API URL, start seconds)."""
    database = pg.fresh("prefect")
    port = free_port()
    env = quiet_env(
        CANDLEFLOW_PREFECT_DATABASE_URL=pg.url(database, "postgresql+asyncpg"),
        CANDLEFLOW_PREFECT_PORT=str(port),
    )
    started = time.perf_counter()
    server = subprocess.Popen(
        [str(BIN / "candleflow"), "server"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    api = f"http://127.0.0.1:{port}/api"
    try:
        while True:
            try:
                with urllib.request.urlopen(f"{api}/health", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.perf_counter() - started > 300:
                raise RuntimeError("the lasting Prefect server did not start")
            time.sleep(0.5)
        start_seconds = time.perf_counter() - started
        subprocess.run(
            [str(BIN / "candleflow"), "setup"],
            env=env | {"PREFECT_API_URL": api},
            check=True,
            stdout=subprocess.DEVNULL,
        )
        # One small run first: a new server answers each kind of request slowly the first time (0.25 s more for
        # the first run's concurrency-limit reads here), which a lasting server has long paid. Not counted.
        warm_up = ["backfill", "--provider", "synthetic", "--symbols", "WARMUP", "--timeframe", "1d"]
        warm_up += ["--start", "2024-01-02", "--end", "2024-01-31", "--warehouse", pg.url(pg.fresh("warm_up"))]
        run_cli(warm_up, env | {"PREFECT_API_URL": api})
        yield api, start_seconds
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


@dataclass
class CliRun:
    wall: float
    rss_mb: float
    output: str

    def flow_seconds(self) -> float:
        found = re.search(r"time ([0-9.]+) s:", self.output)
        return float(found.group(1)) if found else float("nan")

    def written(self) -> int:
        found = re.search(r"([0-9]+) bars written", self.output)
        return int(found.group(1)) if found else 0

    def time_line(self) -> str:
        found = re.search(r"time [0-9.]+ s: (.*)", self.output)
        return found.group(1) if found else ""


def last_flow_run_seconds(api: str, flow: str) -> float:
    """The newest run of `flow` on the server, start to end as Prefect recorded it: everything the flow did,
    the coverage grid after its chunks included (the CLI's `time` line stops at the last chunk)."""
    body = {"flows": {"name": {"any_": [flow]}}, "sort": "START_TIME_DESC", "limit": 1}
    request = urllib.request.Request(
        f"{api}/flow_runs/filter", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        (run,) = json.load(answer)
    return (dt.datetime.fromisoformat(run["end_time"]) - dt.datetime.fromisoformat(run["start_time"])).total_seconds()


def run_cli(args: list[str], env: dict[str, str]) -> CliRun:
    """One `candleflow` command in a new process: its wall time, its own peak RSS and what it printed."""
    started = time.perf_counter()
    process = subprocess.Popen(
        [str(BIN / "candleflow"), *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    assert process.stdout is not None
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"candleflow {' '.join(args[:1])} exited {process.returncode}:\n{output}")
    return CliRun(wall, usage.ru_maxrss / 1024, output)


def floor_seconds(pg: Postgres, parts: list[tuple[Chunk, pd.DataFrame]], tries: int = 3) -> float:
    """One binary COPY of the pre-encoded bars into an empty keyed table (the encoding is not counted); the best
    of `tries`, each into a new table: one COPY varied from 1.0 s to 2.1 s between runs here, and a floor is
    the least it takes."""
    payloads = [pgcopy.encode(pgcopy.frame_columns(f, (c.provider, c.symbol, c.timeframe)), len(f)) for c, f in parts]
    return copy_floor(pg, "floor", payloads, tries)


def copy_floor(pg: Postgres, name: str, payloads: list[bytes], tries: int = 3) -> float:
    """The best of `tries` binary COPYs of complete payloads (header, rows, trailer each), as one COPY, into an
    empty keyed table of a new database `name`."""
    database = pg.fresh(name)
    best = float("inf")
    with psycopg.connect(pg.dsn(database)) as conn:
        for _ in range(tries):
            conn.execute("DROP TABLE IF EXISTS bars")
            conn.execute(KEYED_TABLE.format(name="bars"))
            conn.commit()
            conn.execute("CHECKPOINT")  # each try starts from the same state: no dirty pages of the last one
            started = time.perf_counter()
            copy = f"COPY bars ({', '.join(BAR_COLUMNS)}) FROM STDIN (FORMAT BINARY)"
            with conn.cursor() as cur, cur.copy(copy) as cp:
                cp.write(pgcopy.HEADER)
                for payload in payloads:
                    cp.write(payload[len(pgcopy.HEADER) : -len(pgcopy.TRAILER)])
                cp.write(pgcopy.TRAILER)
            conn.commit()
            best = min(best, time.perf_counter() - started)
    return best


def floor_case(pg: Postgres, workload: Workload, rows: list[Row]) -> tuple[int, float]:
    """Fetch the workload's bars and time the floor on them; add its row. (bars, floor seconds)"""
    parts = list(workload.fetch())
    bars = sum(len(frame) for _, frame in parts)
    floor = floor_seconds(pg, parts)
    rows.append(Row(workload.name, "floor: binary COPY into an empty keyed table", bars, floor, floor))
    return bars, floor


def plain_loop_seconds(pg: Postgres, workload: Workload) -> tuple[float, int]:
    """The script a user writes without candleflow: per chunk, fetch, validate with the same suite, to_sql."""
    database = pg.fresh("plain")
    with psycopg.connect(pg.dsn(database)) as conn:
        conn.execute(KEYED_TABLE.format(name="bars"))
    engine = sa.create_engine(pg.url(database))
    provider = get_provider("synthetic")
    tf = get_timeframe(workload.timeframe)
    started = time.perf_counter()
    for chunk in workload.chunks:
        frame = provider.fetch(FetchRequest((chunk.symbol,), tf, chunk.window_start, chunk.window_end)).bars
        if not validate_bars([(chunk, frame)]).ok:
            raise RuntimeError(f"the plain loop found bad bars in {chunk.label()}")
        frame.to_sql("bars", engine, if_exists="append", index=False, method="multi", chunksize=1000)
    seconds = time.perf_counter() - started
    engine.dispose()
    return seconds, pg.count(database)


def dlt_merge_seconds(pg: Postgres, frames: pd.DataFrame, name: str) -> float:
    import dlt

    database = pg.fresh("dlt")
    pipeline = dlt.pipeline(
        pipeline_name=f"candleflow_e2e_{name}",
        dataset_name="bench",
        # dlt insists on a password; a trust-auth server ignores it
        destination=dlt.destinations.postgres(
            credentials=pg.base.set(
                drivername="postgresql", database=database, password=pg.base.password or "unused"
            ).render_as_string(hide_password=False)
        ),
        pipelines_dir=f"/tmp/candleflow_e2e_dlt_{os.getpid()}",
    )
    resource = dlt.resource(
        frames, name="bars", write_disposition="merge", primary_key=["provider", "symbol", "timeframe", "ts"]
    )
    started = time.perf_counter()
    pipeline.run(resource)
    return time.perf_counter() - started


def backfill_cases(
    pg: Postgres,
    workload: Workload,
    api: str,
    rows: list[Row],
    floor: float,
    *,
    references: bool,
    runners: tuple[str, ...] = ("threads", "warm", "processes"),
) -> str:
    """Run `workload` through candleflow (each runner) and, with `references`, the plain loop and dlt; return the
    warehouse of the first candleflow run (for updates)."""
    first = ""
    for runner in runners:
        database = pg.fresh(f"{workload.name}_{runner}")
        first = first or database
        env = quiet_env(PREFECT_API_URL=api, CANDLEFLOW_TASK_RUNNER=runner)
        if runner == "warm":  # threads, in a fork of the bench's warm runner
            env |= {"CANDLEFLOW_TASK_RUNNER": "threads", "CANDLEFLOW_WARM_SOCKET": WARM_SOCKET}
        run = run_cli(["backfill", *workload.cli_args(), "--warehouse", pg.url(database)], env)
        stored = pg.count(database)
        rows.append(
            Row(
                workload.name,
                f"candleflow backfill, lasting server, {runner} (CLI wall)",
                stored,
                run.wall,
                floor,
                None if runner == "warm" else run.rss_mb,  # the work ran in the runner's fork, not in this process
                run.time_line(),
            )
        )
        seconds = last_flow_run_seconds(api, "historical_backfill")
        rows.append(Row(workload.name, f"  the flow run itself, start to end ({runner})", stored, seconds, floor))
    if references:
        seconds, stored = plain_loop_seconds(pg, workload)
        rows.append(Row(workload.name, "plain loop: fetch, validate, to_sql per chunk", stored, seconds, floor))
        frames = pd.concat([f for _, f in workload.fetch()], ignore_index=True)
        seconds = dlt_merge_seconds(pg, frames, workload.name)
        rows.append(Row(workload.name, "dlt merge of the same fetched bars", len(frames), seconds, floor))
    return first


def print_table(rows: list[Row]) -> None:
    print(f"\n{'workload':<22} {'case':<58} {'bars':>11} {'seconds':>8} {'x floor':>8} {'RSS MB':>7}")
    for r in rows:
        ratio = f"{r.ratio:.3f}" if r.ratio is not None else ""
        rss = f"{r.rss_mb:.0f}" if r.rss_mb is not None else ""
        print(f"{r.workload:<22} {r.case:<58} {r.bars:>11,} {r.seconds:>8.2f} {ratio:>8} {rss:>7}")
        if r.note:
            print(f"{'':<24}{r.note}")
    sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgres", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--quick", action="store_true", help="a tenth of every size")
    parser.add_argument("--skip-reference", action="store_true", help="no plain loop and no dlt")
    parser.add_argument("--only", choices=["daily", "minute", "memory", "market", "pool"], action="append")
    args = parser.parse_args()
    scale = 10 if args.quick else 1
    only = set(args.only or ["daily", "minute", "memory", "market", "pool"])
    pg = Postgres(args.postgres)
    rows: list[Row] = []
    try:
        with lasting_server(pg) as (api, server_start), warm_runner(api) as warm_start:
            print(f"lasting Prefect server (PostgreSQL-backed) started in {server_start:.1f} s: {api}")
            print(f"warm runner (candleflow warm) ready in {warm_start:.1f} s")
            if "daily" in only:
                daily = Workload(
                    "1d 2020-2024",
                    "1d",
                    [f"S{i:03d}" for i in range(500 // scale)],
                    dt.date(2020, 1, 1),
                    dt.date(2024, 12, 31),
                )
                bars, floor = floor_case(pg, daily, rows)
                warehouse = backfill_cases(pg, daily, api, rows, floor, references=not args.skip_reference)
                env = quiet_env(PREFECT_API_URL=api)
                update_args = ["update", "--provider", "synthetic", "--symbols", ",".join(daily.symbols)]
                update_args += ["--timeframe", "1d", "--warehouse", pg.url(warehouse)]
                catch_up = run_cli(update_args, env)
                rows.append(Row(daily.name, "update: 2025 to today (new sessions)", catch_up.written(), catch_up.wall))
                # the first finds nothing new but its windows (from the new watermarks) are new to the ledger; the
                # second is the everyday case: the same windows, unchanged
                for case in ("update again: nothing new, new windows", "update a third time: nothing new"):
                    idle = run_cli(update_args, env)
                    rows.append(Row(daily.name, f"{case} (CLI wall)", idle.written(), idle.wall, None, idle.rss_mb))
                    rows.append(
                        Row(
                            daily.name,
                            "  the flow run itself, start to end",
                            idle.written(),
                            last_flow_run_seconds(api, "incremental_update"),
                            None,
                            None,
                            idle.time_line(),
                        )
                    )
                # the same backfill as a new user runs it first: no PREFECT_API_URL, a temporary server
                database = pg.fresh("daily_temporary")
                temp = run_cli(
                    ["backfill", *daily.cli_args(), "--warehouse", pg.url(database)],
                    quiet_env(CANDLEFLOW_TASK_RUNNER="threads"),
                )
                flow = temp.flow_seconds()  # its server is gone: the CLI's time line, flow start to last chunk
                rows.append(Row(daily.name, "candleflow backfill, temporary server (CLI wall)", bars, temp.wall, floor))
                rows.append(Row(daily.name, "  flow start to its last chunk", bars, flow, floor))
                rows.append(
                    Row(daily.name, "  the rest: process, imports, temporary server, coverage", 0, temp.wall - flow)
                )
                print_table(rows)
            if "minute" in only:
                minute = Workload(
                    "1m 2024-Q1",
                    "1m",
                    [f"M{i:02d}" for i in range(max(2, 20 // scale))],
                    dt.date(2024, 1, 1),
                    dt.date(2024, 3, 31),
                )
                bars, floor = floor_case(pg, minute, rows)
                backfill_cases(pg, minute, api, rows, floor, references=not args.skip_reference)
                print_table(rows)
            if "memory" in only:
                for symbols in (10 // scale or 1, 30 // scale, 100 // scale):
                    workload = Workload(
                        f"1m 2024 x{symbols}",
                        "1m",
                        [f"R{i:03d}" for i in range(symbols)],
                        dt.date(2024, 1, 1),
                        dt.date(2024, 12, 31),
                    )
                    database = pg.fresh(f"memory_{symbols}")
                    env = quiet_env(PREFECT_API_URL=api)
                    done = run_cli(["backfill", *workload.cli_args(), "--warehouse", pg.url(database)], env)
                    rows.append(
                        Row(
                            workload.name,
                            "candleflow backfill, lasting server (CLI wall)",
                            pg.count(database),
                            done.wall,
                            None,
                            done.rss_mb,
                            done.time_line(),
                        )
                    )
                print_table(rows)
            if "market" in only:
                sys.path.insert(0, str(ROOT))  # the generated vendor files and stand-ins are the tests'
                from market_bench import Harness, market_cases

                harness = Harness(pg, api, rows, Row, run_cli, quiet_env, last_flow_run_seconds, copy_floor)
                market_cases(harness, scale)
                print_table(rows)
            if "pool" in only:  # one backfill over the workers of a pool (bench/pool_bench.py)
                sys.path.insert(0, str(ROOT / "bench"))
                from pool_bench import pool_cases

                pool_cases(pg, api, scale)
    finally:
        pg.drop_all()


if __name__ == "__main__":
    main()
