"""candleflow the Prefect way, for real: `candleflow server` (PostgreSQL-backed), `candleflow setup`, `prefect deploy
--all` from the repository root, `candleflow worker`, and runs started through the server's API as the UI's form
starts them. Notices arrive at a local HTTP receiver; runs write to a PostgreSQL warehouse."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import time
from typing import Any

import pandas as pd
import pytest

from candleflow.sessions import schedule
from tests.conftest import count
from tests.team_server import BIN, NoticeReceiver, TeamServer, alive, processes_with, wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.server]


def lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def test_setup_creates_everything_once_and_never_prints_the_url(deployed: Any, receiver: NoticeReceiver) -> None:
    first, second = lines(deployed.setup_first.stdout), lines(deployed.setup_second.stdout)
    assert deployed.setup_first.returncode == deployed.setup_second.returncode == 0
    assert "work pool candleflow (process): created" in first
    assert "notification block candleflow-notify-webhook (CustomWebhookNotificationBlock): created" in first
    assert "automation 'candleflow: notify on failed or crashed runs': created" in first
    assert "automation 'candleflow: crash runs whose heartbeats stopped': created" in first
    assert "rate limit candleflow-provider-polygon (5 requests/s): created" in first
    changes = [line for line in second if line.endswith((": created", ": updated"))]
    assert changes == [], "a second set-up must change nothing"
    assert "automation 'candleflow: notify on failed or crashed runs': unchanged" in second
    assert (
        "rate limit candleflow-provider-polygon (5 requests/s): kept at 2 requests/s (to change: prefect gcl update "
        "candleflow-provider-polygon --limit N --slot-decay-per-second N)"
    ) in second
    assert "rate limit candleflow-provider-synthetic (1000 requests/s): kept" in second
    for out in (deployed.setup_first, deployed.setup_second):
        assert receiver.url not in out.stdout + out.stderr


def test_the_webhook_url_is_kept_secret_in_its_block(team: TeamServer, deployed: Any, receiver: NoticeReceiver) -> None:
    (document,) = [
        d
        for d in team.post("/block_documents/filter", {"include_secrets": False})
        if d["name"] == "candleflow-notify-webhook"
    ]
    assert receiver.url not in str(document) and document["data"]["url"] == "{{url}}"


def test_prefect_yaml_deploys_four_deployments_with_their_schedules(team: TeamServer, deployed: Any) -> None:
    incremental = team.deployment("incremental_update", "incremental")
    backfill = team.deployment("historical_backfill", "backfill")
    repair = team.deployment("repair_gaps", "repair-gaps")
    refresh = team.deployment("refresh_universe", "refresh-universe")
    assert {d["work_pool_name"] for d in (incremental, backfill, repair, refresh)} == {"candleflow"}
    (monday,) = [s["schedule"] for s in refresh["schedules"]]
    assert (monday["cron"], monday["timezone"]) == ("0 5 * * 1", "America/New_York")
    (daily,) = [s["schedule"] for s in incremental["schedules"]]
    assert (daily["cron"], daily["timezone"]) == ("30 18 * * 1-5", "America/New_York")
    assert incremental["parameters"]["timeframes"] == ["1d"] and len(incremental["parameters"]["symbols"]) == 10
    (weekly,) = [s["schedule"] for s in repair["schedules"]]
    assert (weekly["cron"], weekly["timezone"]) == ("0 6 * * 6", "America/New_York")
    assert backfill["schedules"] == []

    def scheduled() -> list[dict[str, Any]]:
        runs = team.post("/flow_runs/filter", {"deployments": {"id": {"any_": [incremental["id"]]}}})
        return [r for r in runs if r["state_type"] == "SCHEDULED"]

    runs = wait_for("the scheduler to create the incremental runs", scheduled, timeout=60)
    for run in runs:  # 18:30 in New York, Monday to Friday
        start = pd.Timestamp(run["expected_start_time"]).tz_convert("America/New_York")
        assert (start.hour, start.minute) == (18, 30) and start.dayofweek < 5


def test_the_backfill_form_schema(team: TeamServer, deployed: Any) -> None:
    schema = team.deployment("historical_backfill", "backfill")["parameter_openapi_schema"]
    props = schema["properties"]
    assert set(schema["required"]) == {"start", "end"}  # symbols stay empty when the universe chosen is ALL
    assert (
        props["universe"]["enum"] == ["tickers", "ALL", "named", "file"] and props["universe"]["default"] == "tickers"
    )
    assert props["provider"]["enum"] == ["synthetic", "csv", "polygon", "polygon-flatfiles", "databento"]
    assert props["timeframe"]["enum"] == ["1m", "5m", "15m", "1h", "1d"]
    assert props["mode"]["enum"] == ["missing", "failed", "all"]
    assert props["on_invalid"]["enum"] == ["reject", "quarantine_rows"]
    assert props["start"]["format"] == props["end"]["format"] == "date"
    assert props["symbols"]["type"] == "array" and props["symbols"]["items"] == {"type": "string"}
    assert (props["max_cost_usd"]["type"], props["max_cost_usd"]["minimum"]) == ("number", 0)
    for name in ("max_cost_usd", "calendar", "warehouse_url"):  # one plain input in the form, empty for none
        assert "anyOf" not in props[name] and props[name]["default"] is None
    for name, prop in props.items():
        assert prop.get("description"), f"{name} has no description"


def test_a_backfill_started_like_the_form_loads_and_reports(
    team: TeamServer, deployed: Any, team_warehouse: str
) -> None:
    parameters = {"symbols": ["AAPL", "MSFT"], "start": "2024-01-01", "end": "2024-03-31", "timeframe": "1h"}
    run_id = team.run_deployment("historical_backfill", "backfill", parameters)
    run = team.wait_final(run_id, timeout=180)
    assert run["state_type"] == "COMPLETED", run["state"]["message"]
    assert run["name"] == "synthetic AAPL,MSFT 1h 2024-01-01..2024-03-31"
    sessions = schedule(dt.date(2024, 1, 1), dt.date(2024, 3, 31))
    assert count(team_warehouse, "SELECT count(*) FROM bars WHERE timeframe = '1h'") == 2 * 7 * len(sessions)
    loaded = "SELECT count(*) FROM ingest_ledger WHERE status = 'loaded' AND timeframe = '1h'"
    assert count(team_warehouse, f"{loaded} AND symbol IN ('AAPL', 'MSFT')") == 2
    names = {t["name"] for t in team.task_runs(run_id)}
    assert "ingest AAPL,MSFT 1h 2024-Q1" in names  # a small run of computed bars: one task (flows.chunks.spread_over)
    artifacts = {a["key"] or a["type"]: a for a in team.artifacts(run_id)}
    assert {"historical-backfill-summary", "historical-backfill-coverage", "progress"} <= set(artifacts)
    assert artifacts["progress"]["data"] == 100.0
    months = sessions.index.to_series().dt.month.value_counts().sort_index().tolist()
    grid_row = "| AAPL 1h | 2024 | " + " | ".join(f"■\u00a0{n}" for n in months)
    assert grid_row in artifacts["historical-backfill-coverage"]["data"]
    assert f"Sessions: {2 * len(sessions)} complete" in artifacts["historical-backfill-coverage"]["data"]


def test_a_failed_run_sends_one_notice_naming_its_chunks(
    team: TeamServer, deployed: Any, receiver: NoticeReceiver
) -> None:
    parameters = {"symbols": ["IBM"], "start": "2023-01-01", "end": "2023-12-31"}
    parameters |= {"provider_options": {"invalid_chunk_rate": 1.0}}
    run_id = team.run_deployment("historical_backfill", "backfill", parameters)
    run = team.wait_final(run_id, timeout=180)
    assert run["state_type"] == "FAILED"
    assert "synthetic:IBM:1d:2023-01-01..2023-12-31 rejected" in run["state"]["message"]
    (notice,) = wait_for("the failure notice", lambda: receiver.about(run_id), timeout=60)
    assert notice["subject"] == f"candleflow: historical_backfill run {run['name']} Failed"
    body = notice["body"]
    assert "1 of 1 chunk(s) did not load (1 rejected, 0 failed; 0 loaded, 0 empty)" in body
    assert "synthetic:IBM:1d:2023-01-01..2023-12-31 rejected: 1 bad row(s); all 250 quarantined" in body
    assert f"run: {team.ui}/runs/flow-run/{run_id}" in body and "deployment: backfill" in body
    time.sleep(3)  # a second notice would come within moments
    assert len(receiver.about(run_id)) == 1, "the hook must not repeat what the server's Automation sent"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"start": "2024-02-01", "end": "2024-01-01"},
            "end date 2024-01-01 is before start date 2024-02-01: swap them or fix one",
        ),
        ({"provider": "yahoo"}, "unknown provider 'yahoo': use one of csv, databento, polygon, polygon-flatfiles"),
        ({"max_cost_usd": -5}, "max_cost_usd -5 must be 0 or more"),
        ({"symbols": ["AAPL", "NOT OK"]}, "malformed symbol 'NOT OK'"),
    ],
)
def test_bad_parameters_fail_at_once_with_one_line(
    team: TeamServer, deployed: Any, team_warehouse: str, changes: dict[str, Any], message: str
) -> None:
    parameters = {"symbols": ["ZBAD"], "start": "2024-01-01", "end": "2024-01-31"} | changes
    run_id = team.run_deployment("historical_backfill", "backfill", parameters)
    run = team.wait_final(run_id, timeout=120)
    assert run["state_type"] == "FAILED"
    state_message = run["state"]["message"]
    assert message in state_message and len(state_message.splitlines()) == 1, state_message
    assert not [t for t in team.task_runs(run_id) if t["name"].startswith("ingest")], "nothing may be fetched"
    assert count(team_warehouse, "SELECT count(*) FROM ingest_ledger WHERE symbol = 'ZBAD'") == 0


def test_a_killed_flow_run_process_under_the_worker_is_announced(
    team: TeamServer, deployed: Any, receiver: NoticeReceiver
) -> None:
    parameters = {"symbols": ["KILL1", "KILL2"], "start": "2022-01-01", "end": "2023-12-31", "timeframe": "1m"}
    run_id = team.run_deployment("historical_backfill", "backfill", parameters)

    def started_chunks() -> bool:
        return team.flow_run(run_id)["state_type"] == "RUNNING" and any(
            t["name"].startswith("ingest") for t in team.task_runs(run_id)
        )

    wait_for("the run to start its chunks", started_chunks, timeout=120)
    (pid,) = processes_with(f"PREFECT__FLOW_RUN_ID={run_id}")
    os.kill(pid, signal.SIGKILL)
    run = team.wait_final(run_id, timeout=60)
    assert run["state_type"] == "CRASHED"
    (notice,) = wait_for("the crash notice", lambda: receiver.about(run_id), timeout=60)
    assert notice["subject"].endswith(" Crashed") and "Process exited with status code: -9" in notice["body"]


def _cli_backfill(team: TeamServer, symbols: str, **env: str) -> subprocess.Popen[str]:
    argv = [str(BIN / "candleflow"), "backfill", "--symbols", symbols, "--timeframe", "1m"]
    argv += ["--start", "2022-01-01", "--end", "2023-12-31"]
    # one chunk task at a time: after SIGTERM the run waits for the chunks in flight, which is what it should
    env = {"CANDLEFLOW_TASK_WORKERS": "1", **env}
    return subprocess.Popen(
        argv, env=team.env(**env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=team.home
    )


def _running_cli_run(team: TeamServer, symbols: str) -> dict[str, Any]:
    def found() -> dict[str, Any] | None:
        for run in team.flow_runs("historical_backfill"):
            if symbols in run["name"] and run["state_type"] == "RUNNING":
                return run
        return None

    return dict(wait_for(f"the CLI's run of {symbols} to be running", found, timeout=120))


def test_the_cli_uses_the_lasting_server_and_sigterm_crashes_its_run(
    team: TeamServer, deployed: Any, receiver: NoticeReceiver, tmp_path: Any
) -> None:
    cli = _cli_backfill(team, "TERM1,TERM2", CANDLEFLOW_WAREHOUSE_URL=f"sqlite:///{tmp_path / 'w.db'}")
    run = _running_cli_run(team, "TERM1,TERM2")
    cli.send_signal(signal.SIGTERM)
    out, err = cli.communicate(timeout=120)
    assert cli.returncode == 128 + signal.SIGTERM and out == ""
    assert err.splitlines()[0] == f"prefect: using the server at {team.api}"
    assert "candleflow: stopped by SIGTERM: the run was marked Crashed" in err
    assert team.flow_run(run["id"])["state_type"] == "CRASHED"
    (notice,) = wait_for("the crash notice", lambda: receiver.about(run["id"]), timeout=60)
    assert notice["subject"].endswith(" Crashed")


def test_a_finished_cli_run_leaves_its_last_logs_on_the_server(team: TeamServer, tmp_path: Any) -> None:
    """The command skips the interpreter's teardown at exit (cli.console): Prefect's exit handlers
    still send the run's last logs, and the exit code is the run's."""
    argv = [str(BIN / "candleflow"), "backfill", "--symbols", "LOGS1", "--timeframe", "1d"]
    argv += ["--start", "2024-01-01", "--end", "2024-12-31", "--warehouse", f"sqlite:///{tmp_path / 'w.db'}"]
    done = subprocess.run(argv, env=team.env(), capture_output=True, text=True, cwd=team.home, timeout=180)
    assert done.returncode == 0, done.stderr
    assert "1 chunks run (1 loaded" in done.stdout
    (run,) = [r for r in team.flow_runs("historical_backfill") if "LOGS1" in r["name"]]
    body = {"logs": {"flow_run_id": {"any_": [run["id"]]}}, "sort": "TIMESTAMP_ASC", "limit": 200}
    messages = [log["message"] for log in team.post("/logs/filter", body)]
    assert any(m.startswith("historical_backfill: 1 chunks run (1 loaded") for m in messages), messages
    assert messages[-1] == "Finished in state Completed()", messages[-3:]


def test_a_cli_run_killed_without_a_worker_is_crashed_by_its_missing_heartbeats(
    team: TeamServer, deployed: Any, receiver: NoticeReceiver, tmp_path: Any
) -> None:
    cli = _cli_backfill(team, "ZOMB1,ZOMB2", CANDLEFLOW_WAREHOUSE_URL=f"sqlite:///{tmp_path / 'w.db'}")
    run = _running_cli_run(team, "ZOMB1,ZOMB2")
    wait_for("the run's first heartbeat", lambda: team.heartbeats(run["id"]) > 0, timeout=60)
    cli.kill()
    cli.communicate(timeout=30)
    assert team.flow_run(run["id"])["state_type"] == "RUNNING"  # nobody saw it die
    crashed = team.wait_final(run["id"], timeout=150)  # 40 s without a heartbeat (set-up's --crash-after-seconds)
    assert crashed["state_type"] == "CRASHED"
    assert crashed["state"]["message"].startswith("No heartbeat for 40 s")
    (notice,) = wait_for("the crash notice", lambda: receiver.about(run["id"]), timeout=60)
    assert "No heartbeat for 40 s" in notice["body"]


def test_the_worker_is_still_serving(deployed: Any) -> None:
    assert alive(deployed.worker.pid), deployed.worker_log.read_text()[-2000:]


def test_a_universe_refresh_deployed_runs_on_the_worker_and_a_backfill_takes_it(
    team: TeamServer, deployed: Any, team_warehouse: str
) -> None:
    from warehouse.universes import load_universe

    parameters = {"name": "team-listed", "provider_options": {"listed_symbols": 3}}
    run_id = team.run_deployment("refresh_universe", "refresh-universe", parameters)
    run = team.wait_final(run_id, timeout=180)
    assert run["state_type"] == "COMPLETED", run["state"]["message"]
    assert run["name"] == "refresh universe team-listed from synthetic"
    assert load_universe(team_warehouse, "team-listed").symbols == ("S0001", "S0002", "S0003")
    artifacts = {a["key"]: a for a in team.artifacts(run_id) if a["key"]}
    assert "3 tickers from synthetic market=stocks active only" in artifacts["universe-team-listed"]["data"]
    backfill = {"universe": "named", "symbols": ["team-listed"], "start": "2024-02-05", "end": "2024-02-09"}
    run = team.wait_final(team.run_deployment("historical_backfill", "backfill", backfill), timeout=180)
    assert run["state_type"] == "COMPLETED", run["state"]["message"]
    sql = "SELECT count(*) FROM bars WHERE symbol IN ('S0001', 'S0002', 'S0003') AND timeframe = '1d'"
    assert count(team_warehouse, sql) == 3 * 5
