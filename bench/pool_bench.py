"""One backfill shared by the workers of a pool (`make bench-e2e BENCH_ARGS="--only pool"`, or this file alone):

- latency-bound: 500 synthetic symbols x 5 years of daily bars, each request waiting 200 ms as a REST vendor's
  round trip does (`--option latency_ms=200`), no rate limit: the backfill deployment's run on a pool of 1, 2 and
  4 workers (each `candleflow worker --limit 2`: the parent holds one slot), cut into partitions of an eighth of
  its estimated bars (9 partitions), 2 chunk tasks each; and the same backfill in one process
  (`candleflow backfill`, 4 chunk tasks) for comparison. Each pool case runs three times on the same workers
  (`--repeat`), a new warehouse each time; the median is shown;
- CPU-bound: the minute backfill of 20 symbols x a quarter (2024-Q1) on 1 and 2 workers, and in one process with
  the thread, process and dask task runners side by side.

All on this machine (2 cores), against a lasting PostgreSQL-backed server and one PostgreSQL warehouse per case.
Each worker is a lasting one: its warm runner is ready before the run starts. Seconds are the parent flow run's,
start to end, as Prefect recorded it; CPU seconds are the whole machine's meanwhile. Not a test: it checks only
that each case stored the bars it should have."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from e2e_bench import BIN, ROOT, Postgres, last_flow_run_seconds, lasting_server, quiet_env, run_cli


def _api(api: str, method: str, path: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        f"{api}{path}", data=data, method=method, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as answer:
        text = answer.read()
    return json.loads(text) if text else None


def _ready(api: str, count: int, logs: Path) -> bool:
    """`count` workers online, each with its warm runner ready: a lasting worker's runs start in its warm runner,
    and one just started starts them cold until it is."""
    online = sum(w["status"] == "ONLINE" for w in _api(api, "POST", "/work_pools/candleflow/workers/filter", {}))
    return online >= count and all("warm runner ready" in (logs / f"worker-{n}.log").read_text() for n in range(count))


@contextmanager
def workers(api: str, count: int, warehouse: str, logs: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    """`count` workers on the candleflow pool, each taking two flow runs at once, their warehouse `warehouse`,
    each with its warm runner ready (as a worker that has been running for a while)."""
    env = quiet_env(PREFECT_API_URL=api, CANDLEFLOW_WAREHOUSE_URL=warehouse, PREFECT_WORKER_QUERY_SECONDS="1")
    # as a user's worker: its own warm runner, which starts each flow run forked with everything imported
    del env["CANDLEFLOW_WARM_SOCKET"]
    started = []
    try:
        for n in range(count):
            with (logs / f"worker-{n}.log").open("wb") as out:
                started.append(
                    subprocess.Popen(
                        [str(BIN / "candleflow"), "worker", "--limit", "2"],
                        env=env,
                        cwd=ROOT,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                    )
                )
        deadline = time.monotonic() + 120
        while not _ready(api, count, logs):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{count} workers did not come online with their warm runners")
            time.sleep(1)
        yield started
    finally:
        for process in started:
            process.terminate()
        for process in started:
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
        # the stopped workers must not count as online for the next case
        for worker in _api(api, "POST", "/work_pools/candleflow/workers/filter", {}):
            _api(api, "DELETE", f"/work_pools/candleflow/workers/{urllib.parse.quote(worker['name'])}")


def busy_cpu_seconds() -> float:
    """The CPU seconds this machine's cores have been busy since boot, every process counted (/proc/stat)."""
    with open("/proc/stat") as stat:
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(n) for n in stat.readline().split()[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def pool_run(api: str, parameters: dict[str, Any], env: dict[str, str]) -> tuple[float, int, str, float]:
    """A run of the backfill deployment with `env` added for it (job variables): its seconds, its partitions, its
    end state and the CPU seconds the machine spent meanwhile (server, PostgreSQL, workers and runs)."""
    busy = busy_cpu_seconds()
    deployment = _api(api, "GET", "/deployments/name/historical_backfill/backfill")
    variables = {**deployment["job_variables"].get("env", {}), **env}
    body = {"parameters": parameters, "job_variables": {"env": variables}}
    run = _api(api, "POST", f"/deployments/{deployment['id']}/create_flow_run", body)
    while True:
        run = _api(api, "GET", f"/flow_runs/{run['id']}")
        if run["state_type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
            break
        time.sleep(1)
    busy = busy_cpu_seconds() - busy
    parts = _api(api, "POST", "/flow_runs/filter", {"flow_runs": {"parent_flow_run_id": {"any_": [run["id"]]}}})
    seconds = (
        dt.datetime.fromisoformat(run["end_time"]) - dt.datetime.fromisoformat(run["start_time"])
    ).total_seconds()
    return seconds, len(parts), run["state_type"], busy


def latency_bound(pg: Postgres, api: str, logs: Path, symbols: int, repeat: int) -> list[str]:
    lines = [f"latency-bound: {symbols} symbols x 2020-2024 daily, 200 ms per request, no rate limit"]
    names = [f"L{i:03d}" for i in range(symbols)]
    parameters = {"symbols": names, "start": "2020-01-01", "end": "2024-12-31", "provider_options": {"latency_ms": 200}}
    bars = 1258 * symbols
    database = pg.fresh("pool_latency_one_process")
    args = ["backfill", "--symbols", ",".join(names), "--start", "2020-01-01", "--end", "2024-12-31"]
    args += ["--option", "latency_ms=200", "--warehouse", pg.url(database)]
    run_cli(args, quiet_env(PREFECT_API_URL=api))
    one = last_flow_run_seconds(api, "historical_backfill")
    lines.append(f"  one process (4 chunk tasks):          {one:6.1f} s  {pg.count(database):>8,} bars")
    print(lines[0], lines[-1], sep="\n", flush=True)
    partition_bars = str(bars // 8 + 1)
    first: float | None = None
    for count in (1, 2, 4):
        runs: list[tuple[float, float]] = []
        with workers(api, count, pg.url(pg.fresh(f"pool_latency_{count}")), logs):
            for attempt in range(repeat):
                database = pg.fresh(f"pool_latency_{count}_{attempt}")
                env = {"CANDLEFLOW_PARTITION_BARS": partition_bars, "CANDLEFLOW_PARTITIONS_AT_ONCE": "8"}
                env |= {"CANDLEFLOW_TASK_WORKERS": "2", "CANDLEFLOW_WAREHOUSE_URL": pg.url(database)}
                seconds, parts, state, cpu = pool_run(api, parameters, env)
                if state != "COMPLETED" or pg.count(database) != bars:
                    raise RuntimeError(f"pool of {count}: {state}, {pg.count(database):,} bars of {bars:,}")
                runs.append((seconds, cpu))
        median = statistics.median(seconds for seconds, _ in runs)
        first = first or median
        spread = f"{min(runs)[0]:.1f}-{max(runs)[0]:.1f}"
        lines.append(
            f"  pool of {count} worker(s), {parts} partitions: {median:6.1f} s ({spread}, {repeat} runs)  "
            f"{bars:>8,} bars  {first / median:4.1f}x  {statistics.median(cpu for _, cpu in runs):5.0f} CPU-s"
        )
        print(lines[-1], flush=True)
    return lines


def cpu_bound(pg: Postgres, api: str, logs: Path, symbols: int) -> list[str]:
    lines = [f"CPU-bound: {symbols} symbols x 2024-Q1 minute bars"]
    names = [f"C{i:02d}" for i in range(symbols)]
    args = ["backfill", "--symbols", ",".join(names), "--timeframe", "1m", "--start", "2024-01-01"]
    args += ["--end", "2024-03-31"]
    for runner in ("threads", "processes", "dask"):
        database = pg.fresh(f"pool_cpu_{runner}")
        env = quiet_env(PREFECT_API_URL=api, CANDLEFLOW_TASK_RUNNER=runner, CANDLEFLOW_TASK_WORKERS="2")
        run_cli([*args, "--warehouse", pg.url(database)], env)
        seconds = last_flow_run_seconds(api, "historical_backfill")
        lines.append(f"  one process, {runner:<9} runner (2 workers): {seconds:6.1f} s  {pg.count(database):>8,} bars")
    parameters = {"symbols": names, "timeframe": "1m", "start": "2024-01-01", "end": "2024-03-31"}
    for count in (1, 2):
        database = pg.fresh(f"pool_cpu_{count}")
        with workers(api, count, pg.url(database), logs):
            env = {"CANDLEFLOW_PARTITION_BARS": "100000", "CANDLEFLOW_PARTITIONS_AT_ONCE": "4"}
            seconds, parts, state, cpu = pool_run(api, parameters, env)
        lines.append(
            f"  pool of {count} worker(s), {parts} partitions:      {seconds:6.1f} s  {pg.count(database):>8,} bars  "
            f"{cpu:5.0f} CPU-s  {state}"
        )
    return lines


def pool_cases(pg: Postgres, api: str, scale: int, repeat: int = 3) -> list[str]:
    """Both workloads on the lasting server `api`; the synthetic provider's rate limit removed first."""
    subprocess.run(
        [str(BIN / "prefect"), "--no-prompt", "deploy", "--all"],
        env=quiet_env(PREFECT_API_URL=api),
        cwd=ROOT,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    with suppress(urllib.error.HTTPError):
        _api(api, "DELETE", "/v2/concurrency_limits/candleflow-provider-synthetic")
    logs = Path(f"/tmp/candleflow-pool-bench-{time.strftime('%H%M%S')}")
    logs.mkdir(parents=True, exist_ok=True)
    lines = latency_bound(pg, api, logs, 500 // scale, repeat)
    print("\n".join(lines), flush=True)
    more = cpu_bound(pg, api, logs, max(2, 20 // scale))
    print("\n".join(more), flush=True)
    return lines + more


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgres", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--quick", action="store_true", help="a tenth of every size")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each latency-bound pool case (the median)")
    args = parser.parse_args()
    pg = Postgres(args.postgres)
    try:
        with lasting_server(pg) as (api, start):
            print(f"lasting Prefect server (PostgreSQL-backed) started in {start:.1f} s: {api}", flush=True)
            pool_cases(pg, api, 10 if args.quick else 1, args.repeat)
    finally:
        pg.drop_all()


if __name__ == "__main__":
    main()
