"""Watching a team's set-up for real: the `freshness` deployment run by the worker of a PostgreSQL-backed server
against a warehouse with a stale and a delisted series (the failure notice reaches the local webhook receiver, the
delisting is told once), and `candleflow doctor` against that server, its pool and worker, the polygon stand-in
(a good and a refused key), a stopped worker and a foreign warehouse schema."""

from __future__ import annotations

import datetime as dt
import os
import re
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from candleflow.sessions import closed_sessions
from cli import main
from tests.conftest import count, fresh_schema
from tests.polygon_server import KEY, polygon_stand_in
from tests.team_server import BIN, NoticeReceiver, TeamServer, run_command, wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.server, pytest.mark.flows, pytest.mark.usefixtures("prefect_harness")]


def test_the_freshness_deployment_fails_naming_the_stale_series_and_tells_a_delisting_once(
    team: TeamServer, deployed: Any, receiver: NoticeReceiver, team_warehouse: str
) -> None:
    today = dt.datetime.now(dt.UTC).date()
    closed = list(closed_sessions(today - dt.timedelta(days=40), today).index.date)
    delisted = {"WOLD": str(closed[-8])}
    option = ["--option", f'delisted={{"WOLD": "{closed[-8]}"}}']
    dates = ["--start", str(closed[0]), "--end", str(today)]
    base = ["backfill", "--warehouse", team_warehouse]
    assert main([*base, "--symbols", "WFRESH,WOLD", *dates, *option]) == 0
    assert main([*base, "--symbols", "WSTALE", "--start", str(closed[0]), "--end", str(closed[-5])]) == 0
    parameters = {
        "symbols": ["WFRESH", "WOLD", "WSTALE"],
        "max_lag_sessions": 2,
        "provider_options": {"delisted": delisted},
    }
    first = team.wait_final(team.run_deployment("freshness_check", "freshness", parameters), timeout=180)
    assert first["state_type"] == "FAILED", first["state"]["message"]
    assert first["name"] == "freshness synthetic WFRESH,WOLD,WSTALE 1d max lag 2"
    message = first["state"]["message"]
    assert "freshness: 1 of 3 series lag more than 2 sessions; 1 delisted (1 found by this check)" in message
    assert "stale: synthetic WSTALE 1d: 4 sessions behind" in message and "not fetched since" in message
    told = f"newly delisted (reported once, not a failure): synthetic WOLD 1d: delisted by the vendor on {closed[-8]}"
    assert told in message
    notices = wait_for("the failure notice", lambda: receiver.about(first["name"]) and receiver.about("WSTALE"), 60)
    (notice,) = [n for n in notices if "WSTALE" in n["body"]]
    assert "ended Failed" in notice["body"] and "newly delisted" in notice["body"] and "WOLD" in notice["body"]
    artifacts = {a["key"]: a for a in team.artifacts(first["id"]) if a["key"]}
    grid = artifacts["freshness-check-freshness"]["data"]
    assert grid.index("WSTALE") < grid.index("WFRESH") < grid.index("WOLD")  # laggards first, delisted last
    assert count(team_warehouse, "SELECT count(*) FROM delistings WHERE symbol = 'WOLD'") == 1

    before = len(receiver.received)
    second = team.wait_final(team.run_deployment("freshness_check", "freshness", parameters), timeout=180)
    assert second["state_type"] == "FAILED"
    assert "newly delisted" not in second["state"]["message"] and "; 1 delisted" in second["state"]["message"]
    wait_for("the second notice", lambda: len(receiver.received) > before, 60)
    later = [n for n in receiver.received[before:] if "WSTALE" in n["body"]]
    assert later and all("newly delisted" not in n["body"] for n in later)
    ended = "SELECT count(*) FROM run_history WHERE flow = 'freshness_check' AND ok = false"
    assert count(team_warehouse, ended) == 2  # both checks' ends kept, neither a completed (ok) one


def doctor(env: dict[str, str]) -> tuple[int, dict[str, str], str]:
    done = run_command([str(BIN / "candleflow"), "doctor", "--timeout", "10"], env, timeout=120)
    found = {}
    for line in done.stdout.splitlines():
        m = re.match(r"^(.+?)\s{2,}(ok|WRONG): (.*)$", line)
        if m:
            found[m.group(1)] = f"{m.group(2)}: {m.group(3)}"
    return done.returncode, found, done.stdout + done.stderr


@pytest.fixture
def polygon() -> Iterator[Any]:
    with polygon_stand_in({"AAPL"}) as server:
        yield server


def test_doctor_says_each_part_is_in_order(
    team: TeamServer, deployed: Any, receiver: NoticeReceiver, team_warehouse: str, polygon: Any
) -> None:
    env = team.env(
        CANDLEFLOW_WAREHOUSE_URL=team_warehouse,
        CANDLEFLOW_NOTIFY_WEBHOOK_URL=receiver.url,
        MASSIVE_API_KEY=KEY,
        CANDLEFLOW_POLYGON_BASE_URL=polygon.url,
    )
    code, found, out = doctor(env)
    print(out)
    assert code == 0, out
    assert found["prefect server"] == f"ok: {team.api} answers"
    assert found["worker"].startswith("ok: 1 live worker on pool candleflow")
    assert found["provider polygon"].startswith("ok: the tickers reference answered")
    assert found["deployment freshness"] == "ok: freshness_check/freshness deployed, 1 schedule active"
    assert found["warehouse schema"].startswith("ok: candleflow's")
    assert found["notifications"].startswith("ok: 1 channel (CustomWebhookNotificationBlock)")
    assert receiver.url not in out

    before = len(receiver.received)
    refused = {**env, "MASSIVE_API_KEY": "not-the-key"}
    done = run_command([str(BIN / "candleflow"), "doctor", "--send-test"], refused, timeout=120)
    assert done.returncode == 1, done.stdout
    assert re.search(r"^provider polygon\s+WRONG: the key was refused \(HTTP 401\)", done.stdout, re.M), done.stdout
    assert "ok: a test notice went through 1 channel" in done.stdout
    wait_for("the test notice", lambda: any("test notice" in n["body"] for n in receiver.received[before:]), 30)


def test_doctor_finds_a_failure_automation_of_an_older_release(
    team: TeamServer, deployed: Any, receiver: NoticeReceiver
) -> None:
    """An Automation set up before freshness_check existed does not watch it: doctor says so, and `candleflow
    setup` run again covers it (and restores the fixture's set-up)."""
    (automation,) = [a for a in team.post("/automations/filter", {}) if a["name"].startswith("candleflow: notify")]
    older = {k: v for k, v in automation.items() if k not in ("id", "created", "updated")}
    names = older["trigger"]["match_related"]["prefect.resource.name"]
    older["trigger"]["match_related"]["prefect.resource.name"] = [n for n in names if n != "freshness_check"]
    httpx.put(f"{team.api}/automations/{automation['id']}", json=older, timeout=30).raise_for_status()
    env = team.env(CANDLEFLOW_NOTIFY_WEBHOOK_URL=receiver.url)
    code, found, out = doctor(env)
    assert code == 1
    assert found["automations"].startswith(
        "WRONG: 'candleflow: notify on failed or crashed runs' does not cover freshness_check: configure"
    ), out
    setup = run_command([str(BIN / "candleflow"), "setup", "--crash-after-seconds", "40"], env)
    assert "automation 'candleflow: notify on failed or crashed runs': updated" in setup.stdout, setup.stdout
    assert doctor(env)[1]["automations"].startswith("ok: ")


def test_doctor_finds_a_stopped_worker_and_a_foreign_schema(team: TeamServer, deployed: Any) -> None:
    pool = "doctor-stopped"
    worker = subprocess.Popen(
        [str(BIN / "prefect"), "worker", "start", "--pool", pool, "--type", "process"],
        env=team.env(PREFECT_WORKER_HEARTBEAT_SECONDS="1"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )

    def registered() -> Any:
        try:
            return team.post(f"/work_pools/{pool}/workers/filter", {})
        except httpx.HTTPStatusError:  # the worker creates its pool first
            return None

    try:
        wait_for("the worker to register", registered, 60)
    finally:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(timeout=10)
    time.sleep(4)  # three of its 1-second heartbeats missed
    with fresh_schema(f"t_foreign_{uuid.uuid4().hex[:8]}") as foreign:
        with sa.create_engine(foreign).begin() as conn:
            conn.exec_driver_sql("CREATE TABLE bars (id integer PRIMARY KEY, price double precision)")
        started = time.monotonic()
        code, found, out = doctor(team.env(CANDLEFLOW_WAREHOUSE_URL=foreign, CANDLEFLOW_PREFECT_POOL=pool))
        took = time.monotonic() - started
    print(out, f"doctor took {took:.1f} s")
    assert code == 1
    assert found["work pool"] == f"ok: work pool {pool} (process)"
    assert re.match(rf"WRONG: no live worker on pool {pool} \(last heard from .+\): start one", found["worker"]), out
    assert found["warehouse"].startswith("ok: ")
    assert (
        found["warehouse schema"].startswith("WRONG: ")
        and "table bars is not candleflow's" in found["warehouse schema"]
    )
    assert found["notifications"].startswith("WRONG: no channel")
