"""What a run leaves for watching: its end in the warehouse's run history (metrics read it), pushed to a
Pushgateway when one is configured, and (an incremental run, a freshness check) the freshness artifact."""

from __future__ import annotations

import logging

import pandas as pd
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run

from candleflow.freshness import freshness_markdown
from candleflow.report import RunSummary
from candleflow.settings import metrics_settings
from ingest.freshness import FreshnessReport
from warehouse.engine import check_reachable
from warehouse.watch import RunRecord, record_run

logger = logging.getLogger("candleflow.watch")


def run_record(flow: str, ok: bool, seconds: float, summary: RunSummary | None = None) -> RunRecord | None:
    """The run's figures as the run history keeps them (chunks, bars and stages from its summary, when it has
    one); None outside a flow run."""
    run_id = flow_run.get_id()
    if not run_id:
        return None
    stages = summary.stages if summary is not None else None
    return RunRecord(
        flow_run_id=str(run_id),
        flow=flow,
        run_name=str(flow_run.get_name() or "")[:200] or None,
        ok=ok,
        ended_at=pd.Timestamp.now(tz="UTC"),
        seconds=float(seconds),
        chunks=len(summary.results) if summary is not None else 0,
        bars_written=int(summary.bars_written) if summary is not None else 0,
        fetch_seconds=float(stages.fetch) if stages else 0.0,
        validate_seconds=float(stages.validate) if stages else 0.0,
        load_seconds=float(stages.load) if stages else 0.0,
    )


def record_run_end(summary: RunSummary, warehouse_url: str | None) -> None:
    """A backfill's, update's or repair's end: `record_end` of its summary's figures."""
    record_end(run_record(summary.flow, summary.ok, summary.elapsed_seconds, summary), warehouse_url)


def record_end(record: RunRecord | None, warehouse_url: str | None) -> None:
    """Keep the run's end in the run history and push it to the Pushgateway (CANDLEFLOW_PUSHGATEWAY_URL) if one
    is set. Neither may fail the run: what it did is committed already; a failure is logged."""
    if record is None:
        return
    try:
        record_run(check_reachable(warehouse_url), record)
    except Exception as exc:  # the run's bars and ledger are committed; its history row is not worth failing it
        logger.warning("could not keep the run's end in the warehouse's run_history: %s", exc)
    settings = metrics_settings()
    if not settings.pushgateway_url:
        return
    from ingest.metrics import push_run

    try:
        push_run(record, settings.pushgateway_url, settings.pushgateway_job, settings.pushgateway_timeout_seconds)
    except Exception as exc:  # an unreachable gateway is the dashboard's problem, not the run's
        logger.warning("could not push the run's figures to the Pushgateway %s: %s", settings.pushgateway_url, exc)


def publish_freshness(flow: str, report: FreshnessReport, title: str) -> None:
    """The series laggards first, as a markdown artifact whose description is the report's headline."""
    create_markdown_artifact(
        markdown=freshness_markdown(title, report.rows, report.max_lag),
        key=flow.replace("_", "-") + "-freshness",
        description=report.headline(),
    )
