"""CANDLEFLOW_TASK_RUNNER=dask (#20): a run's chunk tasks on a real Dask cluster, a `dask scheduler` and two
`dask worker` processes on 127.0.0.1, load exactly what the thread runner loads; and a local cluster when no
address is given."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from flows.backfill import historical_backfill
from tests.team_server import free_port, stop, wait_for
from tests.warehouse_state import assert_same_warehouse

pytestmark = [pytest.mark.flows, pytest.mark.usefixtures("prefect_harness")]
BIN = Path(sys.executable).parent
SYMBOLS = [f"DSK{i}" for i in range(8)]


@dataclass
class DaskCluster:
    address: str
    worker_logs: list[Path]


@pytest.fixture(scope="module")
def dask_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaskCluster]:
    """`dask scheduler` and two one-thread `dask worker` processes, as a team would start them on its machines."""
    tmp = tmp_path_factory.mktemp("dask")
    address = f"tcp://127.0.0.1:{free_port()}"
    host, port = address.removeprefix("tcp://").split(":")
    processes: list[subprocess.Popen[bytes]] = []
    logs = [tmp / "scheduler.log", tmp / "worker-1.log", tmp / "worker-2.log"]
    try:
        scheduler = ["scheduler", "--host", host, "--port", port, "--dashboard-address", ":0"]
        worker = ["worker", address, "--nthreads", "1", "--dashboard-address", ":0", "--no-nanny"]
        for log, args in zip(logs, [scheduler, worker, worker], strict=True):
            with log.open("wb") as out:
                processes.append(subprocess.Popen([str(BIN / "dask"), *args], stdout=out, stderr=subprocess.STDOUT))
            if args is scheduler:
                wait_for("the dask scheduler", lambda: "Scheduler at:" in logs[0].read_text(), timeout=60)
        for log in logs[1:]:
            wait_for(f"{log.name} to register", lambda log=log: "Registered to" in log.read_text(), timeout=60)
        yield DaskCluster(address, logs[1:])
    finally:
        for process in reversed(processes):
            stop(process)


def _backfill(url: str) -> object:
    return historical_backfill(symbols=SYMBOLS, start=dt.date(2020, 1, 1), end=dt.date(2024, 12, 31), warehouse_url=url)


def test_a_run_on_a_dask_scheduler_and_two_workers_loads_exactly(
    dask_cluster: DaskCluster, warehouse_url: str, reference_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _backfill(reference_url)  # the thread runner's warehouse
    before = [log.read_text().count("Task run 'ingest") for log in dask_cluster.worker_logs]
    monkeypatch.setenv("CANDLEFLOW_TASK_RUNNER", "dask")
    monkeypatch.setenv("CANDLEFLOW_DASK_ADDRESS", dask_cluster.address)
    monkeypatch.setenv("CANDLEFLOW_TASK_WORKERS", "2")
    summary = _backfill(warehouse_url)
    assert summary.ok and len(summary.results) == len(
        SYMBOLS
    )  # one chunk of 2020-2024 each; type: ignore[attr-defined]
    assert_same_warehouse(warehouse_url, reference_url)
    ran = [
        log.read_text().count("Task run 'ingest") - n for log, n in zip(dask_cluster.worker_logs, before, strict=True)
    ]
    assert all(n > 0 for n in ran), f"each dask worker runs some of the chunk tasks: {ran}"


def test_without_an_address_the_run_starts_a_local_cluster(
    sqlite_url: str, reference_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _backfill(reference_url)
    monkeypatch.setenv("CANDLEFLOW_TASK_RUNNER", "dask")
    monkeypatch.delenv("CANDLEFLOW_DASK_ADDRESS", raising=False)
    monkeypatch.setenv("CANDLEFLOW_TASK_WORKERS", "2")
    summary = _backfill(sqlite_url)
    assert summary.ok  # type: ignore[attr-defined]
    assert_same_warehouse(sqlite_url, reference_url)
