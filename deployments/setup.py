"""`candleflow setup`: everything the deployments need on a lasting Prefect server, created or brought up to
date, idempotently (a second run changes nothing and says so):

- the process work pool of prefect.yaml (`candleflow`);
- a rate limit per provider (a Prefect global concurrency limit whose slots decay at the vendor's request rate),
  shared by every worker and run; an existing one is kept as it is, so a limit tuned in the UI stays tuned;
- notification blocks from the settings (CANDLEFLOW_NOTIFY_SLACK_WEBHOOK_URL, CANDLEFLOW_NOTIFY_WEBHOOK_URL; URLs
  in secret fields, never printed), or the existing block CANDLEFLOW_NOTIFY_BLOCK names;
- the two Automations of deployments/automations.py (notices on Failed/Crashed runs; crash runs whose
  heartbeats stop).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, cast
from uuid import UUID

from prefect.automations import AutomationCore
from prefect.blocks.core import Block
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate, WorkPoolCreate
from prefect.client.schemas.responses import GlobalConcurrencyLimitResponse
from prefect.exceptions import ObjectNotFound
from prefect.workers.process import ProcessWorker

from candleflow.errors import BadInputError
from candleflow.settings import notify_settings
from deployments.automations import failure_automation, heartbeat_automation
from deployments.prefect_api import check_server, configured_api_url, drain_prefect_services
from providers import PROVIDERS
from tasks.limits import provider_limit_name, warehouse_limit_name
from tasks.notify import FAILURE_AUTOMATION, configured_blocks, load_named_block


def ensure_work_pool(client: SyncPrefectClient, name: str) -> str:
    try:
        pool = client.read_work_pool(name)
    except ObjectNotFound:
        template = ProcessWorker.get_default_base_job_template()
        client.create_work_pool(WorkPoolCreate(name=name, type="process", base_job_template=template))
        return "created"
    if pool.type != "process":
        raise BadInputError(
            f"work pool {name!r} exists with type {pool.type!r}, not 'process': delete it or pass --pool another name"
        )
    return "unchanged"


def _existing_limit(client: SyncPrefectClient, name: str) -> GlobalConcurrencyLimitResponse | None:
    try:
        return client.read_global_concurrency_limit_by_name(name)
    except ObjectNotFound:
        return None


def ensure_rate_limit(client: SyncPrefectClient, provider: str, per_second: float) -> str:
    name = provider_limit_name(provider)
    existing = _existing_limit(client, name)
    if existing is not None:
        # a limit someone set to their plan is theirs; say when it is not candleflow's default, and how to change it
        rate = existing.slot_decay_per_second
        if rate is not None and abs(rate - per_second) > 1e-9:
            change = f"prefect gcl update {name} --limit N --slot-decay-per-second N"
            return f"kept at {rate:g} requests/s (to change: {change})"
        return "kept"
    limit = max(1, round(per_second))
    client.create_global_concurrency_limit(
        GlobalConcurrencyLimitCreate(name=name, limit=limit, slot_decay_per_second=per_second)
    )
    return "created"


def ensure_warehouse_limit(client: SyncPrefectClient, warehouse_url: str | None, slots: int) -> str:
    """The warehouse's concurrency limit (loads at once into it, across every worker); an existing one is kept."""
    name = warehouse_limit_name(warehouse_url)
    existing = _existing_limit(client, name)
    if existing is not None:
        return "kept" if existing.limit == slots else f"kept at {existing.limit} slots (to change: prefect gcl update)"
    client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=slots))
    return "created"


def _secret_dump(block: Block) -> dict[str, Any]:
    """A block's fields with secrets revealed, without Prefect's bookkeeping (`_block_document_id`, ...)."""
    dumped = block.model_dump(mode="json", context={"include_secrets": True})
    return {k: v for k, v in dumped.items() if not k.startswith("_")}


def ensure_block(name: str, block: Block) -> tuple[UUID, str]:
    """Save `block` under `name` unless an identical one is there; returns its document id and what happened."""
    existing: Block | None
    try:
        existing = cast(Block, type(block).load(name))  # sync here (async_dispatch)
    except ValueError:
        existing = None
    if existing is not None and _secret_dump(existing) == _secret_dump(block):
        return cast(UUID, existing._block_document_id), "unchanged"
    document_id = cast(UUID, block.save(name, overwrite=True))  # sync here (async_dispatch)
    return document_id, "created" if existing is None else "updated"


def _same_automation(existing: Any, wanted: AutomationCore) -> bool:
    """Compared as Python values: a trigger's `expect` and `after` are sets, and as JSON lists their order is the
    sets' iteration order, which differs between equal sets built in another order (a second set-up then said
    `updated` for an unchanged automation, in a CI run)."""
    fields = {"name", "description", "enabled", "trigger", "actions", "actions_on_trigger", "actions_on_resolve"}
    mine = wanted.model_dump(include=fields)
    theirs = AutomationCore.model_validate(existing.model_dump()).model_dump(include=fields)
    return bool(mine == theirs)


def ensure_automation(client: SyncPrefectClient, wanted: AutomationCore) -> str:
    found = client.read_automations_by_name(wanted.name)
    if not found:
        client.create_automation(wanted)
        return "created"
    if _same_automation(found[0], wanted):
        return "unchanged"
    client.update_automation(found[0].id, wanted)
    return "updated"


def run_setup(
    *,
    pool: str,
    crash_after_seconds: int,
    providers: Sequence[str] | None = None,
    requests_per_second: float | None = None,
    warehouse_url: str | None = None,
    warehouse_slots: int | None = None,
    say: Callable[[str], None] = print,
) -> int:
    """Set the lasting server at PREFECT_API_URL up for candleflow; prints one line per thing it looked at. The
    rate limits of `providers` (default: every provider) at `requests_per_second` (default: each provider's own);
    with `warehouse_slots`, the concurrency limit of the warehouse at `warehouse_url` (default: the configured one)."""
    api = configured_api_url()
    if not api:
        raise BadInputError(
            "PREFECT_API_URL is not set: candleflow setup configures a lasting server (start one with "
            "candleflow server, then export PREFECT_API_URL=http://127.0.0.1:4200/api)"
        )
    if crash_after_seconds < 35:
        raise BadInputError(f"--crash-after-seconds {crash_after_seconds} must be at least 35 (heartbeats: 30 s)")
    check_server(api)
    settings = notify_settings()
    say(f"candleflow setup on {api}")
    with get_client(sync_client=True) as client:
        say(f"  work pool {pool} (process): {ensure_work_pool(client, pool)}")
        for name in providers or list(PROVIDERS):
            rate = float(requests_per_second or PROVIDERS[name].capabilities.requests_per_second)
            status = ensure_rate_limit(client, name, rate)
            say(f"  rate limit {provider_limit_name(name)} ({rate:g} requests/s): {status}")
        if warehouse_slots is not None:
            status = ensure_warehouse_limit(client, warehouse_url, warehouse_slots)
            say(
                f"  concurrency limit {warehouse_limit_name(warehouse_url)} ({warehouse_slots} loads at once): {status}"
            )
        block_ids: list[UUID] = []
        for name, block in configured_blocks(settings):
            document_id, status = ensure_block(name, block)
            block_ids.append(document_id)
            say(f"  notification block {name} ({type(block).__name__}): {status}")
        if settings.block:
            named = load_named_block(settings.block)
            block_ids.append(named._block_document_id)  # type: ignore[arg-type]
            say(f"  notification block {settings.block} ({type(named).__name__}): exists")
        if block_ids:
            wanted = failure_automation(block_ids, on_success=settings.on_success)
            say(f"  automation {FAILURE_AUTOMATION!r}: {ensure_automation(client, wanted)}")
        else:
            say(
                "  notifications: none configured (set CANDLEFLOW_NOTIFY_SLACK_WEBHOOK_URL, "
                "CANDLEFLOW_NOTIFY_WEBHOOK_URL or CANDLEFLOW_NOTIFY_BLOCK); the failure automation is left as it is"
            )
        heartbeat = heartbeat_automation(crash_after_seconds)
        say(f"  automation {heartbeat.name!r}: {ensure_automation(client, heartbeat)}")
    drain_prefect_services()  # the events of the changes above, before the process ends
    say("next: prefect deploy --all (from the repository root), then candleflow worker")
    return 0
