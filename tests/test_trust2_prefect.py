"""Trust, second round, the Prefect side: keys checked before a run starts, no warehouse password in Prefect's
database, quiet expected failures, crash notices that say what to do, and a worker that stops when told."""

from __future__ import annotations

import datetime as dt
import functools
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.team_server import BIN, wait_for

D = dt.date
KEY_VARIABLES = (
    "MASSIVE_API_KEY",
    "POLYGON_API_KEY",
    "DATABENTO_API_KEY",
    "CANDLEFLOW_POLYGON_API_KEY_BLOCK",
    "CANDLEFLOW_DATABENTO_API_KEY_BLOCK",
    "CANDLEFLOW_FLATFILES_ACCESS_KEY_ID",
    "CANDLEFLOW_FLATFILES_SECRET_ACCESS_KEY",
)


def keyless_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in KEY_VARIABLES and not k.startswith("PREFECT_API")}
    return {**env, "PREFECT_HOME": str(tmp_path / "prefect-home"), **extra}


@pytest.mark.parametrize(
    ("provider", "message"),
    [
        (
            "polygon",
            "candleflow: error: provider polygon has no key: set MASSIVE_API_KEY (or POLYGON_API_KEY), or name a "
            "Prefect Secret block holding it in CANDLEFLOW_POLYGON_API_KEY_BLOCK; nothing was fetched",
        ),
        (
            "databento",
            "candleflow: error: provider databento has no key: set DATABENTO_API_KEY, or name a Prefect Secret "
            "block holding it in CANDLEFLOW_DATABENTO_API_KEY_BLOCK; nothing was fetched",
        ),
        (
            "polygon-flatfiles",
            "candleflow: error: provider polygon-flatfiles has no key: set CANDLEFLOW_FLATFILES_ACCESS_KEY_ID and "
            "CANDLEFLOW_FLATFILES_SECRET_ACCESS_KEY; nothing was fetched",
        ),
    ],
)
def test_a_missing_vendor_key_is_refused_before_anything_runs(provider: str, message: str, tmp_path: Path) -> None:
    warehouse = tmp_path / "w.db"
    argv = [str(BIN / "candleflow"), "backfill", "--provider", provider, "--symbols", "AAPL"]
    argv += ["--start", "2024-03-01", "--end", "2024-03-28", "--warehouse", f"sqlite:///{warehouse}"]
    argv += ["--option", "dataset=XNAS.ITCH"] if provider == "databento" else []
    done = subprocess.run(argv, env=keyless_env(tmp_path), capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [message]
    assert not warehouse.exists(), "nothing may be written"
    assert not (tmp_path / "prefect-home").exists(), "no Prefect server may start"


@pytest.mark.flows
@pytest.mark.usefixtures("prefect_harness")
def test_a_flow_without_its_key_or_its_secret_block_fails_before_fetching(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from flows.backfill import historical_backfill

    for variable in KEY_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    args: dict[str, Any] = dict(symbols=["AAPL"], start=D(2024, 3, 1), end=D(2024, 3, 28), warehouse_url=sqlite_url)
    no_key = historical_backfill(
        provider="databento", provider_options={"dataset": "XNAS.ITCH"}, **args, return_state=True
    )
    monkeypatch.setenv("CANDLEFLOW_POLYGON_API_KEY_BLOCK", "candleflow-no-such-key-block")
    no_block = historical_backfill(provider="polygon", **args, return_state=True)
    expected = {
        no_key: "provider databento has no key: set DATABENTO_API_KEY, or name a Prefect Secret block holding it in "
        "CANDLEFLOW_DATABENTO_API_KEY_BLOCK; nothing was fetched",
        no_block: "no Prefect Secret block named 'candleflow-no-such-key-block': create it or fix "
        "CANDLEFLOW_POLYGON_API_KEY_BLOCK",
    }
    for state, message in expected.items():
        assert state.is_failed()
        assert str(state.message).endswith(message) and len(str(state.message).splitlines()) == 1, state.message
        with get_client(sync_client=True) as client:
            run_id = state.state_details.flow_run_id
            tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id])))
        assert [t.name for t in tasks] == [], "nothing may run before the key is checked"
    assert _ledger_rows(sqlite_url) == 0


def _ledger_rows(url: str, flow_run_id: str | None = None) -> int:
    """Ledger rows (of one flow run), 0 before the table exists."""
    import sqlalchemy as sa

    from warehouse.engine import get_engine

    sql = "SELECT count(*) FROM ingest_ledger" + (" WHERE flow_run_id = :run" if flow_run_id else "")
    with get_engine(url).connect() as conn:
        if not sa.inspect(conn).has_table("ingest_ledger"):
            return 0
        return int(conn.execute(sa.text(sql), {"run": flow_run_id} if flow_run_id else {}).scalar() or 0)


PASSWORD = "s3cret-pw"


def _with_password(url: str, password: str) -> str:
    return url.replace("postgres@", f"postgres:{password}@", 1)


@pytest.mark.postgres
@pytest.mark.server
def test_the_warehouse_password_never_reaches_the_prefect_database(team: Any, postgres_url: str) -> None:
    """A command-line run into a warehouse whose URL holds a password: the Prefect server's database, dumped
    whole (flow-run parameters, logs, artifacts, events), holds the URL without it. The local PostgreSQL trusts
    every connection, so any password works."""
    argv = [str(BIN / "candleflow"), "backfill", "--symbols", "PWD1", "--start", "2024-01-01", "--end", "2024-12-31"]
    argv += ["--warehouse", _with_password(postgres_url, PASSWORD)]
    done = subprocess.run(argv, env=team.env(), capture_output=True, text=True, cwd=team.home, timeout=180)
    assert done.returncode == 0, done.stderr
    assert "1 chunks run (1 loaded" in done.stdout
    dump = subprocess.run(
        ["pg_dump", "--data-only", "-h", "127.0.0.1", "-U", "postgres", "-d", team.database],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    schema = postgres_url.rsplit("%3D", 1)[1]
    assert schema in dump, "the run's parameters are in the dump"
    assert PASSWORD not in dump
    assert "postgres@127.0.0.1:5432/test" in dump


@pytest.mark.flows
@pytest.mark.usefixtures("prefect_harness")
def test_a_flow_refuses_a_warehouse_url_holding_a_password(postgres_url: str) -> None:
    from flows.backfill import historical_backfill

    url = _with_password(postgres_url, "other-pw")
    state = historical_backfill(
        symbols=["PWD2"], start=D(2024, 1, 1), end=D(2024, 1, 31), warehouse_url=url, return_state=True
    )
    assert state.is_failed()
    message = str(state.message)
    assert message.endswith(
        "warehouse_url holds a password, which Prefect keeps in plain text with the run's parameters: leave it out "
        "of the URL and set CANDLEFLOW_WAREHOUSE_PASSWORD (or CANDLEFLOW_WAREHOUSE_URL with the password) where the "
        "run runs"
    ), message
    assert "other-pw" not in message


def test_the_password_comes_from_where_the_run_runs(postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from warehouse.engine import get_engine, without_password

    full = _with_password(postgres_url, PASSWORD)
    bare, password = without_password(full)
    assert password == PASSWORD and PASSWORD not in bare and bare.startswith("postgresql+psycopg://postgres@")
    monkeypatch.setenv("CANDLEFLOW_WAREHOUSE_URL", full)
    assert get_engine(bare).url.password == PASSWORD
    monkeypatch.delenv("CANDLEFLOW_WAREHOUSE_URL")
    monkeypatch.setenv("CANDLEFLOW_WAREHOUSE_PASSWORD", "from-the-environment")
    assert get_engine(bare).url.password == "from-the-environment"


def _logs(team: Any, run_id: str) -> list[str]:
    body = {"logs": {"flow_run_id": {"any_": [run_id]}}, "sort": "TIMESTAMP_ASC", "limit": 200}
    return [log["message"] for log in team.post("/logs/filter", body)]


def _ended_logs(team: Any, run_id: str, message: str) -> list[str]:
    """The run's logs once they hold its last line, `Finished in state Failed('<message>...`."""
    logs = _logs(team, run_id)
    return logs if any(m.startswith(f"Finished in state Failed('{message}") for m in logs) else []


@pytest.mark.postgres
@pytest.mark.server
def test_expected_failures_log_one_line_and_no_traceback(team: Any, deployed: Any) -> None:
    """Bad input and rejected chunks are expected failures: the run's logs and the worker's console carry no
    traceback, and a batch task whose chunks were all rejected says so in its state instead of showing green."""
    console_before = deployed.worker_log.stat().st_size
    bad = team.run_deployment(
        "historical_backfill", "backfill", {"symbols": ["QBAD"], "start": "2024-02-01", "end": "2024-01-01"}
    )
    parameters = {"symbols": ["QREJ1", "QREJ2"], "start": "2023-01-01", "end": "2023-12-31"}
    rejected = team.run_deployment(
        "historical_backfill", "backfill", parameters | {"provider_options": {"invalid_chunk_rate": 1.0}}
    )
    for run_id, message in (
        (bad, "BadInputError: end date 2024-01-01 is before start date 2024-02-01: swap them or fix one"),
        (rejected, "IncompleteRunError: 2 of 2 chunk(s) did not load (2 rejected, 0 failed; 0 loaded, 0 empty)"),
    ):
        run = team.wait_final(run_id, timeout=180)
        assert run["state_type"] == "FAILED" and message in run["state"]["message"], run["state"]
        logs = wait_for(f"flow run {run_id} to log its end", functools.partial(_ended_logs, team, run_id, message), 30)
        assert [m for m in logs if "Traceback" in m or "exception" in m] == [], logs
    batches = [t for t in team.task_runs(rejected) if t["name"].startswith("ingest")]
    assert {(t["state_type"], t["state_name"], t["state"]["message"]) for t in batches} == {
        ("FAILED", "Rejected", "2 of 2 chunks did not load: 2 rejected")  # one batch: synthetic bars are computed
    }
    with deployed.worker_log.open("rb") as log:
        log.seek(console_before)
        console = log.read().decode(errors="replace")
    assert bad in console and rejected in console, "the worker ran both"
    assert "Traceback" not in console, console


OPTIONAL_FIELDS = ("max_cost_usd (Optional)", "calendar (Optional)", "warehouse_url (Optional)")


from tests.test_ui import page  # noqa: E402,F401 (the Prefect UI in Chromium, as the form tests drive it)


@pytest.mark.postgres
@pytest.mark.server
def test_optional_form_fields_read_as_plain_inputs(page: Any, team: Any) -> None:  # noqa: F811 (fixture)
    """max_cost_usd, calendar and warehouse_url showed "Property is type None" in the run form: each is now one
    plain input, left empty for "none", and a value typed into it reaches the run."""
    from playwright.sync_api import expect

    from tests.test_ui import OUTPUT, field, open_form, set_date, set_symbols, submit

    deployment_id = open_form(page, team)
    OUTPUT.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(OUTPUT / "backfill-optional-fields.png"), full_page=True)
    expect(page.get_by_text("Property is type")).to_have_count(0)
    for label in OPTIONAL_FIELDS:
        block = field(page, label)
        expect(block).to_be_visible()
        expect(block.locator("input, textarea")).to_have_count(1)
        expect(block.locator("input, textarea")).to_have_value("")
    set_symbols(page, ["FORM1"])
    set_date(page, "start", "2024-03-01")
    set_date(page, "end", "2024-03-28")
    field(page, "max_cost_usd (Optional)").locator("input, textarea").fill("2.5")
    field(page, "calendar (Optional)").locator("input, textarea").fill("XLON")
    field(page, "dry_run (Optional)").get_by_role("switch").click()  # the shared warehouse stays as it is
    run = submit(page, deployment_id)
    stored = team.flow_run(run["id"])["parameters"]
    assert stored["max_cost_usd"] == 2.5 and stored["calendar"] == "XLON" and stored["dry_run"] is True
    assert stored.get("warehouse_url") is None
    final = team.wait_final(run["id"], timeout=120)
    assert final["state_type"] == "COMPLETED", final["state"]["message"]


def _deployment_on_own_pool(team: Any, pool: str) -> str:
    """The backfill deployment copied onto a work pool of its own, so a worker this test stops serves it alone."""
    team.post("/work_pools/", {"name": pool, "type": "process"})
    source = team.deployment("historical_backfill", "backfill")
    fields = ("flow_id", "entrypoint", "path", "pull_steps", "parameter_openapi_schema", "job_variables", "tags")
    body = {k: source[k] for k in fields if source.get(k) is not None}
    body |= {"name": f"backfill-{pool}", "work_pool_name": pool, "enforce_parameter_schema": False}
    return str(team.post("/deployments/", body)["id"])


@pytest.mark.postgres
@pytest.mark.server
def test_sigterm_stops_the_worker_and_the_crash_notice_says_how_to_finish(
    team: Any, deployed: Any, receiver: Any, postgres_url: str, tmp_path: Path
) -> None:
    """`candleflow worker` stops within seconds of SIGTERM (it ignored it for over a minute while a run went on);
    its run ends Crashed, and the notice says the run's process died, how many chunks had committed, and what to
    run to finish."""
    import signal
    import time

    from tests.conftest import ROOT
    from tests.team_server import processes_with, stop

    deployment_id = _deployment_on_own_pool(team, "cf-sigterm")
    env = team.env(
        CANDLEFLOW_WAREHOUSE_URL=postgres_url,  # a warehouse of its own: the shared one's counts stay
        CANDLEFLOW_NOTIFY_WEBHOOK_URL=receiver.url,
        PREFECT_WORKER_QUERY_SECONDS="1",
        CANDLEFLOW_TASK_WORKERS="1",  # one small batch after another: the run is mid-way for a while
        CANDLEFLOW_BATCH_ROWS="20000",
    )
    with (tmp_path / "worker.log").open("wb") as out:
        worker = subprocess.Popen(
            [str(BIN / "candleflow"), "worker", "--pool", "cf-sigterm"], env=env, cwd=ROOT, stdout=out, stderr=out
        )
    try:
        parameters = {"symbols": ["TERMW1", "TERMW2"], "start": "2022-01-01", "end": "2023-12-31", "timeframe": "1m"}
        run_id = str(team.post(f"/deployments/{deployment_id}/create_flow_run", {"parameters": parameters})["id"])

        def ended_chunks() -> int:
            return team.flow_run(run_id)["state_type"] == "RUNNING" and _ledger_rows(postgres_url, run_id)

        wait_for("the run to commit its first chunks", ended_chunks, timeout=180)
        wait_for(
            "the run's labels to count them", lambda: "candleflow.chunks_ended" in team.flow_run(run_id)["labels"], 30
        )
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=30)
    finally:
        stop(worker)
    log = (tmp_path / "worker.log").read_text(errors="replace")
    assert worker.returncode == 128 + signal.SIGTERM, log[-3000:]
    assert processes_with(f"PREFECT__FLOW_RUN_ID={run_id}") == [], "the run's process must not outlive the worker"
    run = team.wait_final(run_id, timeout=60)
    assert run["state_type"] == "CRASHED", run["state"]
    (notice,) = wait_for("the crash notice", lambda: receiver.about(run_id), timeout=60)
    body = notice["body"]
    committed = _ledger_rows(postgres_url, run_id)
    said = int(body.split("The run's process died: ")[1].split(" of 48 chunks")[0])
    assert 1 <= said <= committed, body
    assert (
        f"{said} of 48 chunks had ended before it and stay committed. To finish, run it again with the same "
        "parameters (deployment " in body
    ), body
    time.sleep(1)
    assert len(receiver.about(run_id)) == 1
