"""The two Automations candleflow keeps on a lasting Prefect server (see `candleflow setup`):

- FAILURE_AUTOMATION: when a candleflow flow run enters Failed or Crashed (and Completed, with
  CANDLEFLOW_NOTIFY_ON_SUCCESS), send a notice through each configured notification block. It runs on the
  server, so it fires when the run's process was killed too. The notice carries the run's state message: for a
  run whose chunks failed or were rejected, the counts and each chunk with its reason.
- HEARTBEAT_AUTOMATION: Prefect's "zombie flow run" recipe. Runs send a heartbeat event every
  PREFECT_FLOWS_HEARTBEAT_FREQUENCY seconds; a candleflow run that sent one and then neither another nor a final
  state within `crash_after_seconds` is marked Crashed, which in turn fires the failure Automation.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from uuid import UUID

from prefect.automations import AutomationCore, ChangeFlowRunState, EventTrigger, Posture, SendNotification
from prefect.client.schemas.objects import StateType

from tasks.notify import FAILURE_AUTOMATION, FLOW_NAMES, HEARTBEAT_AUTOMATION, HEARTBEAT_FLOWS

_CANDLEFLOW_RUNS = {"prefect.resource.id": "prefect.flow-run.*"}
_CANDLEFLOW_FLOWS = {"prefect.resource.role": "flow", "prefect.resource.name": list(FLOW_NAMES)}
_HEARTBEAT_FLOWS = {"prefect.resource.role": "flow", "prefect.resource.name": list(HEARTBEAT_FLOWS)}

NOTICE_SUBJECT = "candleflow: {{ flow.name }} run {{ flow_run.name }} {{ flow_run.state.name }}"
# A crashed run's process died and said nothing: the notice counts its chunks from the run's labels
# (tasks/reporting.py) and says what to run to finish, as tasks/notify.py's crash_lines does for the hooks.
NOTICE_BODY = """{{ flow.name }} run {{ flow_run.name }} ended {{ flow_run.state.name }}.
{% if flow_run.state.type == "CRASHED" %}The run's process died: \
{% if "candleflow.chunks_planned" in flow_run.labels %}{{ flow_run.labels["candleflow.chunks_ended"] }} of \
{{ flow_run.labels["candleflow.chunks_planned"] }} chunks had \
ended before it and stay committed.{% else %}no chunk had ended before it.{% endif %} To finish, run it again with \
the same parameters ({% if deployment %}deployment {{ deployment.name }}{% else %}the same candleflow command\
{% endif %}): what committed is skipped (a backfill's mode missing, the default, fetches only the rest).
Prefect said: {{ flow_run.state.message }}
{% else %}{{ flow_run.state.message }}
{% endif %}{% if deployment %}deployment: {{ deployment.name }}
{% endif %}run: {{ flow_run|ui_url }}"""


def failure_automation(block_ids: Sequence[UUID], *, on_success: bool) -> AutomationCore:
    """Send a notice through every block in `block_ids` when a candleflow run ends Failed or Crashed."""
    states = ["Failed", "Crashed", *(["Completed"] if on_success else [])]
    return AutomationCore(
        name=FAILURE_AUTOMATION,
        description=(
            "Sends a notice when a candleflow flow run ("
            + ", ".join(FLOW_NAMES)
            + ") ends "
            + " or ".join(states)
            + ". Managed by `candleflow setup`: changes here are overwritten by its next run."
        ),
        enabled=True,
        trigger=EventTrigger(
            match=_CANDLEFLOW_RUNS,  # type: ignore[arg-type]
            match_related=_CANDLEFLOW_FLOWS,  # type: ignore[arg-type]
            expect={f"prefect.flow-run.{state}" for state in states},
            posture=Posture.Reactive,
            threshold=1,
            within=dt.timedelta(0),
        ),
        actions=[SendNotification(block_document_id=i, subject=NOTICE_SUBJECT, body=NOTICE_BODY) for i in block_ids],
    )


def heartbeat_automation(crash_after_seconds: int) -> AutomationCore:
    """Mark a candleflow run Crashed when its heartbeats stop for `crash_after_seconds` before it ended."""
    return AutomationCore(
        name=HEARTBEAT_AUTOMATION,
        description=(
            f"Marks a candleflow flow run Crashed when it sent no heartbeat and no final state for "
            f"{crash_after_seconds} s (its process died without a worker to notice). Managed by `candleflow setup`."
        ),
        enabled=True,
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            expect={"prefect.flow-run.*"},  # another heartbeat, or any state change (an ended run sends no more)
            match=_CANDLEFLOW_RUNS,  # type: ignore[arg-type]
            match_related=_HEARTBEAT_FLOWS,  # type: ignore[arg-type]
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=dt.timedelta(seconds=crash_after_seconds),
        ),
        actions=[
            ChangeFlowRunState(
                name="Crashed",
                force=False,
                state=StateType.CRASHED,
                message=(
                    f"No heartbeat for {crash_after_seconds} s: the run's process died or lost the server "
                    "(marked Crashed by candleflow's heartbeat Automation)"
                ),
            )
        ],
    )
