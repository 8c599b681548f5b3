"""One backfill shared by every worker of the pool (#20): the team server (PostgreSQL-backed), `prefect deploy
--all`, and three `candleflow worker` processes on the pool. A deployed backfill larger than
CANDLEFLOW_PARTITION_BARS fans out into partitions (child flow runs of the partition deployment); the warehouse
ends equal to the same backfill run in one process; a worker killed outright (SIGKILL: its machine died) costs a
rerun of its partition, not a bar; two overlapping fanned-out backfills both end exact; `--on-pool` hands a run
to the pool, and says in one line when there is no server or no worker."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, fresh_schema
from tests.team_server import BIN, TeamServer, alive, children_of, run_command, stop, wait_for
from tests.warehouse_state import assert_same_warehouse

pytestmark = [pytest.mark.server, pytest.mark.postgres]


@dataclass
class Worker:
    process: subprocess.Popen[bytes]
    log: Path

    def took(self, run_id: str) -> bool:
        return run_id in self.log.read_text(errors="replace")


@dataclass
class Pool:
    team: TeamServer
    warehouse: str
    workers: list[Worker]

    def start_worker(self, n: int) -> Worker:
        log = self.team.home / f"worker-{n}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                # two flow runs at once each: a parent and a partition, or two partitions
                [str(BIN / "candleflow"), "worker", "--limit", "2"],
                env=self.team.env(CANDLEFLOW_WAREHOUSE_URL=self.warehouse, PREFECT_WORKER_QUERY_SECONDS="1"),
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        worker = Worker(process, log)
        self.workers.append(worker)
        return worker


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pool]:
    """A team server of its own, set up and deployed as the README says, and three workers on its pool, each
    running two flow runs at once at most, as a team sizes its machines' workers."""
    import uuid

    from tests.team_server import team_server

    with team_server(tmp_path_factory.mktemp("fanout")) as team, fresh_schema(f"t_fan_{uuid.uuid4().hex[:8]}") as url:
        setup = run_command([str(BIN / "candleflow"), "setup", "--crash-after-seconds", "40"], team.env())
        assert setup.returncode == 0, setup.stdout + setup.stderr
        deploy = run_command([str(BIN / "prefect"), "--no-prompt", "deploy", "--all"], team.env())
        assert deploy.returncode == 0, deploy.stdout + deploy.stderr
        running = Pool(team, url, [])
        try:
            for n in (1, 2, 3):
                running.start_worker(n)
            wait_for("three online workers", lambda: _online(team) >= 3, timeout=120)
            yield running
        finally:
            for worker in running.workers:
                stop(worker.process)


def _online(team: TeamServer) -> int:
    workers = team.post("/work_pools/candleflow/workers/filter", {})
    return sum(1 for w in workers if w["status"] == "ONLINE")


def fan_out(team: TeamServer, parameters: dict[str, Any], **env: str) -> str:
    """A run of the backfill deployment, as the UI starts one, with settings of the workers' environment for
    this run (job variables): small partitions, so a test's backfill is cut into several."""
    deployment = team.deployment("historical_backfill", "backfill")
    variables = {**deployment["job_variables"].get("env", {}), "CANDLEFLOW_PARTITION_BARS": "3000", **env}
    variables["CANDLEFLOW_PREFECT_CRASH_AFTER_SECONDS"] = "40"  # as the set-up's --crash-after-seconds
    body = {"parameters": parameters, "job_variables": {"env": variables}}
    return str(team.post(f"/deployments/{deployment['id']}/create_flow_run", body)["id"])


def children(team: TeamServer, run_id: str) -> list[dict[str, Any]]:
    body = {"flow_runs": {"parent_flow_run_id": {"any_": [run_id]}}, "limit": 200}
    return list(team.post("/flow_runs/filter", body))


def reference(symbols: list[str], start: str, end: str, url: str, team: TeamServer) -> None:
    """The same backfill in one process (the CLI, against the same server: not a deployment's run, no fan-out)."""
    argv = [str(BIN / "candleflow"), "backfill", "--symbols", ",".join(symbols), "--start", start, "--end", end]
    done = run_command([*argv, "--warehouse", url], team.env(), timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture
def reference_pg() -> Iterator[str]:
    import uuid

    with fresh_schema(f"t_ref_{uuid.uuid4().hex[:8]}") as url:
        yield url


def no_run_left_running(team: TeamServer) -> None:
    body = {"flow_runs": {"state": {"type": {"any_": ["RUNNING", "PENDING"]}}}, "limit": 200}
    left = [r["name"] for r in team.post("/flow_runs/filter", body)]
    assert not left, left


SYMBOLS = [f"FAN{i:02d}" for i in range(18)]


def five_years(symbols: list[str], **options: int) -> dict[str, Any]:
    """A daily backfill of 2020-2024, the synthetic provider's options (its latency) given."""
    return {"symbols": symbols, "start": "2020-01-01", "end": "2024-12-31", "provider_options": options}


def test_a_large_backfill_fans_out_over_every_worker_and_loads_exactly(pool: Pool, reference_pg: str) -> None:
    team = pool.team
    parameters = five_years(SYMBOLS, latency_ms=300)
    run_id = fan_out(team, parameters, CANDLEFLOW_PARTITIONS_AT_ONCE="4")
    run = team.wait_final(run_id, timeout=300)
    assert run["state_type"] == "COMPLETED", run["state"]
    parts = children(team, run_id)
    # 18 series of about 1,260 daily bars, partitions of 3,000 bars at most: two series each
    assert len(parts) == 9 and all(p["state_type"] == "COMPLETED" for p in parts), [p["name"] for p in parts]
    names = sorted(p["name"] for p in parts)
    assert names[0] == "part 1/9: synthetic FAN00,FAN01 1d 2020-01-01..2024-12-31", names
    took = [sum(w.took(p["id"]) for p in parts) for w in pool.workers]
    assert all(took), f"every worker runs at least one partition: {took}"
    reference(SYMBOLS, "2020-01-01", "2024-12-31", reference_pg, team)
    assert_same_warehouse(pool.warehouse, reference_pg, SYMBOLS)
    no_run_left_running(team)


def descendants(pid: int) -> list[int]:
    found = []
    for child in children_of(pid):
        found += [child, *descendants(child)]
    return found


def _worker_of(pool: Pool, run_id: str) -> Worker | None:
    return next((w for w in pool.workers if alive(w.process.pid) and w.took(run_id)), None)


def test_a_worker_killed_outright_costs_a_rerun_of_its_partition_not_a_bar(pool: Pool, reference_pg: str) -> None:
    team = pool.team
    symbols = [f"KIL{i:02d}" for i in range(8)]
    # each request waits 6 s, as a slow vendor's would: a partition is still running when its worker dies
    parameters = five_years(symbols, latency_ms=6000)
    run_id = fan_out(team, parameters, CANDLEFLOW_PARTITIONS_AT_ONCE="4")

    def a_partition_running_beside_the_parent() -> tuple[dict[str, Any], Worker] | None:
        parent = _worker_of(pool, run_id)
        for part in children(team, run_id):
            worker = _worker_of(pool, part["id"])
            if part["state_type"] == "RUNNING" and worker is not None and worker is not parent:
                return part, worker
        return None

    victim, worker = wait_for("a partition running on another worker", a_partition_running_beside_the_parent, 180)
    # the machine died: every process of its worker at once (the worker, Prefect's worker under it, the warm
    # runner, the runs), SIGKILL, so nothing is told and nothing marks the run
    machine = [*descendants(worker.process.pid), worker.process.pid]
    for pid in machine:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    worker.process.wait(30)
    wait_for("the worker's processes to die", lambda: not any(alive(pid) for pid in machine), 30)
    run = team.wait_final(run_id, timeout=400)  # 40 s without a heartbeat crash it, then it runs again
    assert run["state_type"] == "COMPLETED", run["state"]
    again = team.flow_run(victim["id"])
    assert again["state_type"] == "COMPLETED" and again["run_count"] >= 2, (again["state"], again["run_count"])
    pool.start_worker(len(pool.workers) + 1)  # three workers again, for the next tests
    reference(symbols, "2020-01-01", "2024-12-31", reference_pg, team)
    assert_same_warehouse(pool.warehouse, reference_pg, symbols)
    no_run_left_running(team)


def test_two_overlapping_fanned_out_backfills_at_once_lose_and_double_nothing(pool: Pool, reference_pg: str) -> None:
    team = pool.team
    first, second = [f"OVL{i:02d}" for i in range(0, 12)], [f"OVL{i:02d}" for i in range(6, 18)]
    runs = [
        fan_out(
            team, {"symbols": symbols, "start": "2020-01-01", "end": "2024-12-31"}, CANDLEFLOW_PARTITIONS_AT_ONCE="3"
        )
        for symbols in (first, second)
    ]
    ended = [team.wait_final(run_id, timeout=300) for run_id in runs]
    assert [r["state_type"] for r in ended] == ["COMPLETED", "COMPLETED"], [r["state"] for r in ended]
    union = sorted({*first, *second})
    reference(union, "2020-01-01", "2024-12-31", reference_pg, team)
    assert_same_warehouse(pool.warehouse, reference_pg, union)


def test_a_whole_universe_update_fans_out_by_series_and_ends_like_one_process(pool: Pool, reference_pg: str) -> None:
    team = pool.team
    symbols = [f"UPD{i}" for i in range(10)]
    deployment = team.deployment("incremental_update", "incremental")
    # about 280 daily bars a series over the lookback: two series a partition
    variables = {**deployment["job_variables"].get("env", {}), "CANDLEFLOW_PARTITION_BARS": "600"}
    parameters = {"symbols": symbols, "timeframes": ["1d"], "lookback_days": 400, "end": "2024-06-28"}
    body = {"parameters": parameters, "job_variables": {"env": variables}}
    run_id = str(team.post(f"/deployments/{deployment['id']}/create_flow_run", body)["id"])
    run = team.wait_final(run_id, timeout=300)
    assert run["state_type"] == "COMPLETED", run["state"]
    parts = children(team, run_id)
    assert sorted(p["name"] for p in parts)[0] == "part 1/5: update synthetic UPD0,UPD1 1d to 2024-06-28"
    argv = [str(BIN / "candleflow"), "update", "--symbols", ",".join(symbols), "--lookback-days", "400"]
    done = run_command([*argv, "--end", "2024-06-28", "--warehouse", reference_pg], team.env(), timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert_same_warehouse(pool.warehouse, reference_pg, symbols)


def _cli(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return run_command([str(BIN / "candleflow"), *argv], env, timeout=300)


BACKFILL = ["backfill", "--start", "2024-01-01", "--end", "2024-12-31"]


def test_on_pool_hands_the_run_to_a_worker_and_prints_its_summary(pool: Pool) -> None:
    done = _cli([*BACKFILL, "--symbols", "POOL1,POOL2", "--on-pool"], pool.team.env())
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("historical_backfill: 2 chunks run (2 loaded, 0 empty"), done.stdout
    assert "candleflow: handed to pool 'candleflow': flow run synthetic POOL1,POOL2 1d" in done.stderr, done.stderr
    (run,) = [r for r in pool.team.flow_runs("historical_backfill") if "POOL1,POOL2" in r["name"]]
    assert run["deployment_id"] and run["state_type"] == "COMPLETED"
    assert_loaded = pool.warehouse
    from tests.conftest import count

    assert count(assert_loaded, "SELECT count(*) FROM ingest_ledger WHERE symbol IN ('POOL1', 'POOL2')") == 2


def test_on_pool_without_a_server_says_so_in_one_line_and_writes_nothing(tmp_path: Path) -> None:
    warehouse = tmp_path / "w.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    argv = [*BACKFILL, "--symbols", "AAPL", "--on-pool", "--warehouse", f"sqlite:///{warehouse}"]
    done = _cli(argv, env)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("candleflow: error: --on-pool hands the run to the work pool of a lasting Prefect")
    assert len(done.stderr.splitlines()) == 1 and "PREFECT_API_URL is not set" in done.stderr
    from tests.team_server import free_port

    gone = _cli(argv, {**env, "PREFECT_API_URL": f"http://127.0.0.1:{free_port()}/api"})
    assert gone.returncode == 2 and len(gone.stderr.splitlines()) == 1, gone.stderr
    assert "did not answer (ConnectError after " in gone.stderr and "nothing was written" in gone.stderr
    assert not warehouse.exists()


def test_on_pool_with_no_worker_gives_up_after_its_wait_and_deletes_the_run(pool: Pool) -> None:
    """Last in this module: it stops the pool's workers."""
    for worker in pool.workers:
        stop(worker.process)
    done = _cli([*BACKFILL, "--symbols", "NOWK1", "--on-pool", "--pool-wait", "3"], pool.team.env())
    assert done.returncode == 2, done.stdout + done.stderr
    last = done.stderr.splitlines()[-1]
    assert last.startswith("candleflow: error: --on-pool: no worker of pool 'candleflow' took the run in 3 s"), last
    assert "the run was deleted and nothing was written" in last
    assert not [r for r in pool.team.flow_runs("historical_backfill") if "NOWK1" in r["name"]]
    from tests.conftest import count

    assert count(pool.warehouse, "SELECT count(*) FROM ingest_ledger WHERE symbol = 'NOWK1'") == 0
