"""`backfill --on-pool` and `update --on-pool`: the same run handed to the work pool of the lasting Prefect server,
as a run of its deployment (a large one is cut into partitions there, flows/fanout.py), instead of run in this
process; this command waits for it, shows its progress, and prints its summary and exit code."""

from __future__ import annotations

import argparse
import datetime as dt
import time
from typing import Any
from uuid import UUID

from candleflow.errors import BadInputError
from cli.output import err, out

DEPLOYMENTS = {"backfill": "historical_backfill/backfill", "update": "incremental_update/incremental"}
SUMMARY_KEYS = {"backfill": "historical-backfill-summary", "update": "incremental-update-summary"}
SERVER_TIMEOUT_SECONDS = 10.0
EXIT_OK, EXIT_INCOMPLETE = 0, 1


def _jsonable(value: Any) -> Any:
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def lasting_server() -> str:
    """PREFECT_API_URL, checked to answer; raises BadInputError saying what is missing and how long it waited."""
    import httpx

    from deployments.prefect_api import configured_api_url

    api = configured_api_url()
    if not api:
        raise BadInputError(
            "--on-pool hands the run to the work pool of a lasting Prefect server, and PREFECT_API_URL is not set: "
            "start one (candleflow server), export PREFECT_API_URL=http://HOST:4200/api and start a worker on each "
            "machine (candleflow worker); nothing was written"
        )
    started = time.monotonic()
    try:
        response = httpx.get(f"{api.rstrip('/')}/health", timeout=SERVER_TIMEOUT_SECONDS)
        response.raise_for_status()
    except (httpx.HTTPError, ValueError) as exc:
        raise BadInputError(
            f"--on-pool: the Prefect server at PREFECT_API_URL={api} did not answer ({type(exc).__name__} after "
            f"{time.monotonic() - started:.1f} s): start it (candleflow server) or fix PREFECT_API_URL; nothing "
            "was written"
        ) from None
    return api


def hand_to_pool(args: argparse.Namespace, params: dict[str, Any]) -> int:
    """Create the run of the command's deployment with `params`, wait up to --pool-wait seconds for a worker to
    take it (else delete it and say so), then follow it to its end."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    from candleflow.settings import warehouse_settings
    from flows.runs import name_of

    api = lasting_server()
    name = DEPLOYMENTS[args.command]
    # the workers' own warehouse unless this command names one (a password is never a parameter: the workers'
    # CANDLEFLOW_WAREHOUSE_PASSWORD gives it)
    if not (args.warehouse or warehouse_settings().url):
        params = {**params, "warehouse_url": None}
    with get_client(sync_client=True) as client:
        try:
            deployment = client.read_deployment_by_name(name)
        except ObjectNotFound:
            raise BadInputError(
                f"--on-pool: the deployment {name} is not on the server at {api}: run prefect deploy --all from the "
                "repository (after candleflow setup); nothing was written"
            ) from None
        pool = str(deployment.work_pool_name)
        parameters = _jsonable(params)
        named = name_of(name.split("/")[0], parameters)  # its name from the start, as the flow will name it
        run = client.create_flow_run_from_deployment(deployment.id, parameters=parameters, name=named)
        err.print(f"candleflow: handed to pool {pool!r}: flow run {run.name} ({_ui_url(api, run.id)})", markup=False)
        waited = _wait_taken(client, run.id, float(args.pool_wait))
        if waited is not None:
            client.delete_flow_run(run.id)
            online = _online_workers(client, pool)
            raise BadInputError(
                f"--on-pool: no worker of pool {pool!r} took the run in {waited:.0f} s ({online} worker(s) online): "
                f"start one (candleflow worker, with PREFECT_API_URL={api}) or wait longer (--pool-wait); the run "
                "was deleted and nothing was written"
            )
        try:
            final = _follow(client, run.id)
        except KeyboardInterrupt:
            err.print(
                f"candleflow: stopped following; the run goes on on the pool: {_ui_url(api, run.id)}", markup=False
            )
            return 130
        headline = _summary_headline(client, run.id, SUMMARY_KEYS[args.command])
    state = final.state
    if headline:
        out.print(headline, markup=False)
    if state is None or not state.is_completed():
        message = state.message if state is not None else "no state"
        err.print(f"candleflow: the run ended {state.name if state else '?'}: {message}", markup=False)
        return EXIT_INCOMPLETE
    return EXIT_OK


def _ui_url(api: str, run_id: UUID) -> str:
    return f"{api.rstrip('/').removesuffix('/api')}/runs/flow-run/{run_id}"


def _wait_taken(client: Any, run_id: UUID, seconds: float) -> float | None:
    """None once a worker took the run (it left Scheduled); else how long it waited for one."""
    started = time.monotonic()
    while True:
        run = client.read_flow_run(run_id)
        if run.state_type is not None and run.state_type.value != "SCHEDULED":
            return None
        waited = time.monotonic() - started
        if waited >= seconds:
            return waited
        time.sleep(0.5)


def _online_workers(client: Any, pool: str) -> int:
    try:
        workers = client.read_workers_for_work_pool(pool)
    except Exception:
        return 0
    return sum(1 for w in workers if str(getattr(w.status, "value", w.status)).upper() == "ONLINE")


def _follow(client: Any, run_id: UUID) -> Any:
    """Wait for the run's end, drawing its chunk counts (the run's labels) as a progress bar."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from tasks.reporting import CHUNKS_ENDED_LABEL, CHUNKS_PLANNED_LABEL

    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err, transient=False) as progress:
        bar = progress.add_task("chunks", total=None)
        while True:
            run = client.read_flow_run(run_id)
            labels = run.labels or {}
            if CHUNKS_PLANNED_LABEL in labels:
                progress.update(
                    bar, completed=int(labels.get(CHUNKS_ENDED_LABEL, 0)), total=int(labels[CHUNKS_PLANNED_LABEL])
                )
            if run.state is not None and run.state.is_final():
                return run
            time.sleep(1.0)


def _summary_headline(client: Any, run_id: UUID, key: str) -> str | None:
    """The run's summary line, as its summary artifact describes it."""
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

    artifacts = client.read_artifacts(
        artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]), key=ArtifactFilterKey(any_=[key])
        )
    )
    return str(artifacts[-1].description) if artifacts else None
