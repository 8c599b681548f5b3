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


def run_record(summary: RunSummary) -> RunRecord | None:
    """The run's figures as the run history keeps them; None outside a flow run."""
    run_id = flow_run.get_id()
    if not run_id:
        return None
    return RunRecord(
        flow_run_id=str(run_id),
        flow=summary.flow,
        run_name=str(flow_run.get_name() or "")[:200] or None,
        ok=summary.ok,
        ended_at=pd.Timestamp.now(tz="UTC"),
        seconds=float(summary.elapsed_seconds),
        chunks=len(summary.results),
        bars_written=int(summary.bars_written),
        fetch_seconds=float(summary.stages.fetch),
        validate_seconds=float(summary.stages.validate),
        load_seconds=float(summary.stages.load),
    )


def record_run_end(summary: RunSummary, warehouse_url: str | None) -> None:
    """Keep the run's end in the run history and push it to the Pushgateway (CANDLEFLOW_PUSHGATEWAY_URL) if one
    is set. Neither may fail the run: what it loaded is committed already; a failure is logged."""
    record = run_record(summary)
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
