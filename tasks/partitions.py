"""What a fanned-out run asks the Prefect server (flows/fanout.py): whether the partition deployment is there,
start a child flow run of it, read the children's states and counts, run a crashed child again, and what a child
tells its parent through its run's labels (read by the parent, on any machine)."""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any, cast
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment
from prefect.exceptions import ObjectNotFound
from prefect.runtime import flow_run
from prefect.states import AwaitingRetry, Crashed

from candleflow.report import RunSummary

# prefect.yaml's deployment of flows/partition.py
PARTITION_DEPLOYMENT = "partition/partition"

# What a child reports on its run's labels when it ends: the parent sums them into its one summary.
WRITTEN_LABEL = "candleflow.bars_written"
UNCHANGED_LABEL = "candleflow.chunks_unchanged"
REVISED_LABEL = "candleflow.chunks_revised"
REMOVED_LABEL = "candleflow.bars_removed"
REPORTED = {"written": WRITTEN_LABEL, "unchanged": UNCHANGED_LABEL, "revised": REVISED_LABEL, "removed": REMOVED_LABEL}


def partition_deployment() -> tuple[UUID, str] | None:
    """The partition deployment's id and work pool, or None when it is not deployed on this server."""
    with get_client(sync_client=True) as client:
        try:
            deployment = client.read_deployment_by_name(PARTITION_DEPLOYMENT)
        except ObjectNotFound:
            return None
    return deployment.id, str(deployment.work_pool_name or "")


def start_child(deployment: UUID, parameters: Mapping[str, Any], name: str) -> UUID:
    """A flow run of the partition deployment, scheduled now on its pool and shown under the current run, with
    the job variables the current run was started with (its environment, a Kubernetes pool's image...)."""
    job_variables = dict(flow_run.get_job_variables() or {}) or None
    run: Any = run_deployment(
        deployment,
        parameters=dict(parameters),
        flow_run_name=name,
        timeout=0,
        as_subflow=True,
        job_variables=job_variables,
    )
    return UUID(str(run.id))  # a FlowRun: called from a flow's (synchronous) thread


def read_children(ids: Sequence[UUID]) -> dict[UUID, FlowRun]:
    if not ids:
        return {}
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=list(ids))), limit=len(ids))
    return {run.id: run for run in runs}


def last_heartbeat(run_id: UUID, since: dt.datetime) -> dt.datetime | None:
    """When the run last sent a heartbeat (since `since`), as the server's events say; None if it sent none."""
    from prefect.events.filters import EventFilter, EventNameFilter, EventOccurredFilter, EventResourceFilter

    event_filter = EventFilter(
        occurred=EventOccurredFilter(since=cast(Any, since)),
        event=EventNameFilter(name=["prefect.flow-run.heartbeat"]),
        resource=EventResourceFilter(id=[f"prefect.flow-run.{run_id}"]),
    )
    with get_client(sync_client=True) as client:
        page = client.read_events(filter=event_filter, limit=1)
    return max((event.occurred for event in page.events), default=None)


def mark_crashed(run_id: UUID, why: str) -> None:
    """End a run its process can no longer end (it died before the server's heartbeat Automation saw it live)."""
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(run_id, Crashed(message=why), force=True)


def run_again(run_id: UUID, why: str) -> None:
    """Schedule a crashed child again, as the UI's Retry does: the same run, its attempt counted."""
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(run_id, AwaitingRetry(message=why), force=True)


def report_to_parent(summary: RunSummary) -> None:
    """Put a child's counts on its run's labels, where its parent reads them."""
    run_id = flow_run.get_id()
    if run_id is None:
        return
    labels: dict[str, bool | int | float | str] = {
        WRITTEN_LABEL: summary.bars_written,
        UNCHANGED_LABEL: summary.unchanged,
        REVISED_LABEL: summary.revised,
        REMOVED_LABEL: summary.removed,
    }
    with contextlib.suppress(Exception), get_client(sync_client=True) as client:  # the run's outcome stands
        client.update_flow_run_labels(UUID(str(run_id)), labels)


def reported(run: FlowRun, what: str) -> int:
    """A count a child put on its labels (0 when it put none: it did not end by itself)."""
    value = (run.labels or {}).get(REPORTED[what], 0)
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0
