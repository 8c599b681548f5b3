"""Notification channels: Prefect notification blocks built from settings (a Slack webhook, a generic JSON webhook)
or named (any block Prefect has: Teams, email, ...), and the notice a run sends through them.

Two senders share these channels, so a failure is announced once:
- on a lasting server, the Automation that `candleflow setup` creates (FAILURE_AUTOMATION) sends from the server
  when a candleflow run enters Failed or Crashed, even if the run's process was killed; the run's Failed state
  message carries the chunk-level detail (see RunSummary.failure_message);
- where that Automation does not exist (a temporary server, or set-up not run), the flows' hooks send the same
  notice themselves (flows/runs.py).
Webhook URLs are secrets: saved blocks keep them in secret fields, and nothing here prints them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prefect.blocks.abstract import NotificationBlock
from prefect.blocks.core import Block
from prefect.blocks.notifications import CustomWebhookNotificationBlock, SlackWebhook
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import FlowRun, State
from prefect.settings import PREFECT_UI_URL

from candleflow.errors import BadInputError
from candleflow.report import RunSummary
from candleflow.settings import NotifySettings, notify_settings
from tasks.reporting import CHUNKS_ENDED_LABEL, CHUNKS_PLANNED_LABEL

FLOW_NAMES = ("historical_backfill", "incremental_update", "repair_gaps", "refresh_universe", "freshness_check")
# Runs the heartbeat Automation crashes when they fall silent: also a fanned-out run's partitions, which its
# parent runs again once crashed (their failures are told once, in the parent's notice).
HEARTBEAT_FLOWS = (*FLOW_NAMES, "partition")
FAILURE_AUTOMATION = "candleflow: notify on failed or crashed runs"
HEARTBEAT_AUTOMATION = "candleflow: crash runs whose heartbeats stopped"
SLACK_BLOCK = "candleflow-notify-slack"
WEBHOOK_BLOCK = "candleflow-notify-webhook"
# The generic webhook's JSON body. The block substitutes {{subject}}, {{body}} and its secrets ({{url}}).
WEBHOOK_JSON = {"source": "candleflow", "subject": "{{subject}}", "body": "{{body}}"}


@dataclass(frozen=True)
class Notice:
    subject: str
    body: str


def webhook_block(url: str) -> CustomWebhookNotificationBlock:
    """A generic JSON POST. The URL lives in the block's secrets (shown obfuscated in the UI), not in `url`."""
    return CustomWebhookNotificationBlock.model_validate(
        {"name": "candleflow", "url": "{{url}}", "json_data": dict(WEBHOOK_JSON), "secrets": {"url": url}}
    )


def slack_block(url: str) -> SlackWebhook:
    return SlackWebhook.model_validate({"url": url})


def configured_blocks(settings: NotifySettings) -> list[tuple[str, Block]]:
    """(name to save it under, block) for each webhook URL in the settings."""
    blocks: list[tuple[str, Block]] = []
    if settings.slack_webhook_url:
        blocks.append((SLACK_BLOCK, slack_block(settings.slack_webhook_url.get_secret_value())))
    if settings.webhook_url:
        blocks.append((WEBHOOK_BLOCK, webhook_block(settings.webhook_url.get_secret_value())))
    return blocks


def load_named_block(name: str) -> NotificationBlock:
    """The existing notification block `name` (CANDLEFLOW_NOTIFY_BLOCK), whatever its type."""
    try:
        block = Block.load(_block_slug(name))
    except ValueError:
        raise BadInputError(
            f"no Prefect notification block named {name!r}: create it in the Prefect UI (Blocks) or fix "
            "CANDLEFLOW_NOTIFY_BLOCK"
        ) from None
    if not isinstance(block, NotificationBlock):
        raise BadInputError(f"Prefect block {name!r} is a {type(block).__name__}, not a notification block")
    return block


def _block_slug(name: str) -> str:
    """A block name as Block.load wants it, `type-slug/name`."""
    if "/" in name:
        return name
    with get_client(sync_client=True) as client:
        for document in client.read_block_documents():
            if document.name == name and document.block_type is not None:
                return f"{document.block_type.slug}/{name}"
    return f"missing/{name}"


def channels(settings: NotifySettings) -> list[NotificationBlock]:
    out: list[NotificationBlock] = [block for _, block in configured_blocks(settings)]  # type: ignore[misc]
    if settings.block:
        out.append(load_named_block(settings.block))
    return out


def notice_for_state(flow_name: str, run: FlowRun, state: State[Any], summary: RunSummary | None) -> Notice:
    """What a run's end is announced with: its state, what failed and why (with a summary: the counts and the
    chunks that failed or were rejected), and its page in the UI."""
    subject = f"candleflow: {flow_name} run {run.name} {state.name}"
    lines = [f"{flow_name} run {run.name} ended {state.name}."]
    if state.is_crashed():
        lines += crash_lines(run, state)
    elif summary is not None:
        lines += [summary.headline(), summary.failure_message(limit=20) if not summary.ok else ""]
    elif state.message:
        lines.append(state.message)
    ui = PREFECT_UI_URL.value()
    if ui:
        lines.append(f"run: {ui}/flow-runs/flow-run/{run.id}")
    return Notice(subject, "\n".join(line for line in lines if line))


def crash_lines(run: FlowRun, state: State[Any]) -> list[str]:
    """For a run whose process died: how many chunks had ended (each committed with its ledger row, counted in
    the run's labels) and what to run to finish. The server's Automation says the same (deployments/automations)."""
    with get_client(sync_client=True) as client:
        labels = client.read_flow_run(run.id).labels
    if CHUNKS_PLANNED_LABEL in labels:
        ended = f"{labels.get(CHUNKS_ENDED_LABEL, 0)} of {labels[CHUNKS_PLANNED_LABEL]} chunks had ended before it"
        ended += " and stay committed."
    else:
        ended = "no chunk had ended before it."
    again = "the deployment" if run.deployment_id else "the same candleflow command"
    return [
        f"The run's process died: {ended} To finish, run it again with the same parameters ({again}): what "
        "committed is skipped (a backfill's mode missing, the default, fetches only the rest).",
        f"Prefect said: {state.message}",
    ]


def send_notice(notice: Notice, *, success: bool = False) -> int:
    """Send `notice` through every configured channel; returns how many. Success notices only when
    CANDLEFLOW_NOTIFY_ON_SUCCESS is set."""
    settings = notify_settings()
    if success and not settings.on_success:
        return 0
    sent = 0
    for block in channels(settings):
        block.notify(notice.body, notice.subject)  # type: ignore[unused-coroutine]  # sync here: returns None
        sent += 1
    return sent


def server_will_notify(state: State[Any]) -> bool:
    """Whether the server's candleflow Automation announces runs that end in `state`'s type."""
    with get_client(sync_client=True) as client:
        found = client.read_automations_by_name(FAILURE_AUTOMATION)
    if not found or not found[0].enabled:
        return False
    trigger: Any = found[0].trigger
    wanted = {f"prefect.flow-run.{state.type.value.title()}"}
    return bool(wanted & set(getattr(trigger, "expect", ()) or ()))
