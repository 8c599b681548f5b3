"""`candleflow doctor`: every part a scheduled run needs, checked read-only, each within a deadline, one finding
per part: the warehouse and its schema, the Prefect server, the work pool and a live worker on it, the rate
limits and Automations `candleflow setup` makes, the deployments of prefect.yaml and their schedules, each
configured provider's key (asked with one cheap request), and the notification channels (optionally sent a test).
"""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from candleflow.errors import CandleflowError
from candleflow.settings import notify_settings, team_server_settings
from providers import PROVIDERS, get_provider
from providers.errors import ProviderError
from providers.settings import ProviderSettings

PREFECT_YAML = Path(__file__).resolve().parent.parent / "prefect.yaml"


@dataclass(frozen=True)
class Finding:
    part: str
    ok: bool
    detail: str  # what was found; when wrong, what is wrong and the fix

    def line(self) -> str:
        return f"{self.part:<28} {'ok' if self.ok else 'WRONG'}: {self.detail}"


class Wrong(Exception):
    """A part is not in order: the message says what and the fix."""


Check = Callable[[], str]  # returns what it found (ok), or raises Wrong


def run_checks(checks: list[tuple[str, Check]], timeout: float) -> list[Finding]:
    """Every check at once, in threads, each given `timeout` seconds; the findings in the checks' order."""
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=min(16, max(1, len(checks))))
    futures = [(part, pool.submit(check)) for part, check in checks]
    findings: list[Finding] = []
    deadline = time.monotonic() + timeout
    for part, future in futures:
        try:
            findings.append(Finding(part, True, future.result(timeout=max(0.0, deadline - time.monotonic()))))
        except concurrent.futures.TimeoutError:
            findings.append(Finding(part, False, f"no answer within {timeout:g} s: is it up and reachable?"))
        except Wrong as exc:
            findings.append(Finding(part, False, str(exc)))
        except (CandleflowError, ValueError) as exc:
            findings.append(Finding(part, False, str(exc)))
        except Exception as exc:  # an unexpected answer is a finding too, never a traceback
            findings.append(Finding(part, False, f"{type(exc).__name__}: {exc}"))
    pool.shutdown(wait=False, cancel_futures=True)
    return findings


# ---- the warehouse


def check_warehouse(url: str | None) -> Check:
    def check() -> str:
        from warehouse.engine import check_reachable, get_engine, safe_url
        from warehouse.queries import has_schema
        from warehouse.schema import ForeignTableError

        try:
            engine = check_reachable(url)
        except ForeignTableError:  # it answers; the schema's finding says what is foreign
            return f"{safe_url(get_engine(url).url)} answers"
        where = safe_url(engine.url)
        return f"{where} answers" + ("" if has_schema(engine) else " (no tables yet: the first run creates them)")

    return check


def check_schema(url: str | None) -> Check:
    def check() -> str:
        import sqlalchemy as sa

        from warehouse.engine import check_reachable
        from warehouse.queries import has_schema
        from warehouse.schema import _ADDED_COLUMNS, check_tables, metadata

        engine = check_reachable(url)  # a foreign table of one of candleflow's names is refused here
        if not has_schema(engine):
            return "no tables yet: the first run creates them"
        check_tables(engine)
        inspector = sa.inspect(engine)
        present = set(inspector.get_table_names())
        missing = [name for name in metadata.tables if name not in present]
        for table, columns in _ADDED_COLUMNS.items():
            have = {c["name"].lower() for c in inspector.get_columns(table.name)}
            missing += [f"{table.name}.{c}" for c in columns if c not in have]
        if missing:
            raise Wrong(
                f"older than this candleflow (missing {', '.join(missing)}): the next backfill or update adds them "
                "before it writes; until then metrics and freshness read what is there"
            )
        return f"candleflow's {len(metadata.tables)} tables, current"

    return check


# ---- the Prefect server and what setup and deploy put there


def check_server(api: str | None, timeout: float) -> Check:
    def check() -> str:
        if not api:
            raise Wrong(
                "PREFECT_API_URL is not set: start the team's server (candleflow server) and export "
                "PREFECT_API_URL=http://127.0.0.1:4200/api"
            )
        try:
            response = httpx.get(f"{api.rstrip('/')}/health", timeout=timeout, verify=not api.startswith("http://"))
            response.raise_for_status()
        except httpx.HTTPError as exc:
            raise Wrong(f"{api} does not answer ({type(exc).__name__}): start it (candleflow server)") from None
        return f"{api} answers"

    return check


def _client() -> Any:
    from prefect.client.orchestration import get_client

    return get_client(sync_client=True)


def check_pool(pool: str) -> Check:
    def check() -> str:
        from prefect.exceptions import ObjectNotFound

        with _client() as client:
            try:
                found = client.read_work_pool(pool)
            except ObjectNotFound:
                raise Wrong(f"work pool {pool} does not exist: run candleflow setup") from None
        if found.is_paused:
            raise Wrong(f"work pool {pool} is paused: resume it (prefect work-pool resume {pool})")
        return f"work pool {pool} ({found.type})"

    return check


def check_worker(pool: str) -> Check:
    def check() -> str:
        from prefect.exceptions import ObjectNotFound

        with _client() as client:
            try:
                workers = client.read_workers_for_work_pool(pool)
            except ObjectNotFound:
                raise Wrong(
                    f"no work pool {pool}, so no worker: run candleflow setup, then candleflow worker"
                ) from None
        now = dt.datetime.now(dt.UTC)

        def live(w: Any) -> bool:  # heard from within three of its heartbeats (the server's own rule, sooner)
            beat = w.last_heartbeat_time
            every = float(w.heartbeat_interval_seconds or 30)
            return beat is not None and (now - beat).total_seconds() <= 3 * every

        online = [w for w in workers if live(w)]
        if not online:
            seen = max((w.last_heartbeat_time for w in workers if w.last_heartbeat_time), default=None)
            last = f" (last heard from {seen:%Y-%m-%d %H:%M:%S} UTC)" if seen else ""
            raise Wrong(f"no live worker on pool {pool}{last}: start one (candleflow worker)")
        return f"{len(online)} live worker{'s' if len(online) != 1 else ''} on pool {pool}: " + ", ".join(
            sorted(w.name for w in online)[:5]
        )

    return check


def check_rate_limits(providers: list[str]) -> Check:
    def check() -> str:
        from prefect.exceptions import ObjectNotFound

        from tasks.limits import provider_limit_name

        missing, inactive = [], []
        with _client() as client:
            for name in providers:
                try:
                    limit = client.read_global_concurrency_limit_by_name(provider_limit_name(name))
                except ObjectNotFound:
                    missing.append(provider_limit_name(name))
                    continue
                if not limit.active:
                    inactive.append(provider_limit_name(name))
        if missing or inactive:
            what = [f"missing {', '.join(missing)}"] if missing else []
            what += [f"inactive {', '.join(inactive)}"] if inactive else []
            raise Wrong(f"{'; '.join(what)}: run candleflow setup")
        return ", ".join(provider_limit_name(p) for p in providers)

    return check


def check_automations() -> Check:
    def check() -> str:
        from tasks.notify import FAILURE_AUTOMATION, FLOW_NAMES, HEARTBEAT_AUTOMATION

        wrong = []
        with _client() as client:
            for name in (FAILURE_AUTOMATION, HEARTBEAT_AUTOMATION):
                found = client.read_automations_by_name(name)
                if not found:
                    wrong.append(f"{name!r} missing")
                    continue
                if not found[0].enabled:
                    wrong.append(f"{name!r} disabled")
                related = getattr(getattr(found[0].trigger, "match_related", None), "root", None) or {}
                related = related[0] if isinstance(related, list) and related else related
                covered = related.get("prefect.resource.name", []) if isinstance(related, dict) else []
                covered = [covered] if isinstance(covered, str) else list(covered)
                left = [f for f in FLOW_NAMES if f not in covered]
                if left:  # set up by an older release: it does not watch the flows added since
                    wrong.append(f"{name!r} does not cover {', '.join(left)}")
        if wrong:
            fix = "configure a notification channel and run candleflow setup (again, after an upgrade)"
            raise Wrong(f"{'; '.join(wrong)}: {fix}")
        return f"{FAILURE_AUTOMATION!r} and {HEARTBEAT_AUTOMATION!r} enabled"

    return check


@dataclass(frozen=True)
class Deployment:
    flow: str
    name: str
    scheduled: bool
    provider: str | None


def deployments_of(path: Path = PREFECT_YAML) -> list[Deployment]:
    """The deployments prefect.yaml declares: flow (its entrypoint's function, each named as its flow), name,
    whether it has an active schedule, the provider its parameters name."""
    data = yaml.safe_load(path.read_text()) or {}
    out = []
    for d in data.get("deployments") or []:
        flow = str(d["entrypoint"]).rsplit(":", 1)[1]
        scheduled = any(s.get("active", True) for s in d.get("schedules") or [])
        out.append(Deployment(flow, str(d["name"]), scheduled, (d.get("parameters") or {}).get("provider")))
    return out


def check_deployment(deployment: Deployment) -> Check:
    def check() -> str:
        from prefect.exceptions import ObjectNotFound

        full = f"{deployment.flow}/{deployment.name}"
        with _client() as client:
            try:
                found = client.read_deployment_by_name(full)
            except ObjectNotFound:
                raise Wrong(f"{full} is not deployed: prefect deploy --all (from the repository root)") from None
        if not deployment.scheduled:
            return f"{full} deployed (runs when started)"
        active = [s for s in found.schedules if s.active]
        if found.paused or not active:
            raise Wrong(
                f"{full}: its schedule is {'paused' if found.paused else 'inactive'}: "
                f"prefect deployment resume {full!r}"
            )
        return f"{full} deployed, {len(active)} schedule{'s' if len(active) != 1 else ''} active"

    return check


# ---- providers and notifications


def configured_providers(named: list[str]) -> list[str]:
    """The providers a deployment names, or whose key (csv: directory) is in the environment; synthetic only when
    named."""
    out = []
    for name in PROVIDERS:
        try:
            settings = get_provider(name).settings
        except CandleflowError:  # unusable as configured (databento without a dataset): a finding if it is used
            if name in named:
                out.append(name)
            continue
        has_key = type(settings).missing_keys is not ProviderSettings.missing_keys
        keyed = has_key and settings.missing_keys() is None
        csv = name == "csv" and bool(getattr(settings, "directory", None))
        if name in named or keyed or csv:
            out.append(name)
    return out


def check_provider(name: str, server_up: bool) -> Check:
    def check() -> str:
        options: dict[str, Any] = {}
        source = get_provider(name)  # bad settings: BadInputError, a finding
        missing = source.settings.missing_keys()
        if missing and server_up:
            from tasks.secrets import with_secrets

            options = with_secrets(name, {})  # a key kept in a Prefect Secret block
            source = get_provider(name, options)
            missing = source.settings.missing_keys()
        if missing:
            raise Wrong(f"no key: set {missing} where the worker runs (or name a Prefect Secret block)")
        try:
            reached = source.probe()
        except ProviderError as exc:
            status = getattr(exc, "http_status", None)
            if status in (401, 403):
                raise Wrong(f"the key was refused (HTTP {status}): {exc}; fix the key") from None
            raise Wrong(f"{exc}") from None
        return reached

    return check


def check_notifications(send_test: bool) -> Check:
    def check() -> str:
        from tasks.notify import Notice, channels

        settings = notify_settings()
        if not settings.configured:
            raise Wrong(
                "no channel: set CANDLEFLOW_NOTIFY_WEBHOOK_URL, CANDLEFLOW_NOTIFY_SLACK_WEBHOOK_URL or "
                "CANDLEFLOW_NOTIFY_BLOCK, then candleflow setup"
            )
        found = channels(settings)  # a named block that does not exist is refused here
        names = ", ".join(type(b).__name__ for b in found)
        if not send_test:
            return f"{len(found)} channel{'s' if len(found) != 1 else ''} ({names}); --send-test sends a test notice"
        when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        notice = Notice("candleflow doctor: test notice", f"candleflow doctor sent this test notice at {when}.")
        for block in found:
            block.notify(notice.body, notice.subject)  # type: ignore[unused-coroutine]  # sync here
        return f"a test notice went through {len(found)} channel{'s' if len(found) != 1 else ''} ({names})"

    return check


def diagnose(warehouse_url: str | None, *, timeout: float, send_test: bool) -> list[Finding]:
    """Every finding, in order: the warehouse's two, then the server's (which the rest of Prefect's need), then
    Prefect's parts, the providers and the notifications."""
    from deployments.prefect_api import configured_api_url

    api = configured_api_url()
    first = run_checks(
        [
            ("warehouse", check_warehouse(warehouse_url)),
            ("warehouse schema", check_schema(warehouse_url)),
            ("prefect server", check_server(api, timeout)),
        ],
        timeout,
    )
    server_up = first[-1].ok
    pool = team_server_settings().pool
    declared = deployments_of()
    providers = configured_providers([d.provider for d in declared if d.provider])
    checks: list[tuple[str, Check]] = []
    if server_up:
        checks += [
            ("work pool", check_pool(pool)),
            ("worker", check_worker(pool)),
            ("rate limits", check_rate_limits(providers)),
            ("automations", check_automations()),
        ]
        checks += [(f"deployment {d.name}", check_deployment(d)) for d in declared]
    checks += [(f"provider {name}", check_provider(name, server_up)) for name in providers]
    checks.append(("notifications", check_notifications(send_test)))
    rest = run_checks(checks, timeout)
    if not server_up:
        skipped = "not checked: the Prefect server does not answer"
        rest = [Finding(p, False, skipped) for p in ("work pool", "worker", "rate limits", "automations")] + rest
    return first + rest
