"""Artifacts a run publishes in the Prefect UI: a progress bar while chunks run, a summary table and a coverage
grid."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from uuid import UUID

from prefect.artifacts import create_markdown_artifact, create_progress_artifact, update_progress_artifact

from candleflow.coverage import SessionCoverage, coverage_markdown
from candleflow.report import RunSummary


def progress_text(flow: str, done: int, total: int) -> str:
    """`historical_backfill: 1 of 2 chunks done`: the progress artifact's description."""
    return f"{flow}: {done} of {total} chunk{'' if total == 1 else 's'} done"


def start_progress(total: int, flow: str) -> UUID | None:
    if total == 0:
        return None
    artifact_id = create_progress_artifact(progress=0.0, description=progress_text(flow, 0, total))
    return artifact_id if isinstance(artifact_id, UUID) else None


def advance_progress(artifact_id: UUID | None, done: int, total: int, flow: str) -> None:
    """The bar and its description, in the one update call the bar alone would cost."""
    if artifact_id is not None and total:
        description = progress_text(flow, done, total)
        update_progress_artifact(artifact_id=artifact_id, progress=100.0 * done / total, description=description)


def publish_summary(summary: RunSummary) -> None:
    key = summary.flow.replace("_", "-") + "-summary"
    create_markdown_artifact(
        markdown=f"## {summary.headline()}\n\n{summary.markdown()}", key=key, description=summary.headline()
    )


def publish_coverage(flow: str, title: str, series: Mapping[str, Sequence[SessionCoverage]]) -> None:
    """The run's coverage grid (symbol by month: complete, partial, explained, missing) as a markdown artifact."""
    states = Counter(c.state for coverage in series.values() for c in coverage)
    description = f"{title}: " + ", ".join(f"{n} {state}" for state, n in sorted(states.items()))
    create_markdown_artifact(
        markdown=coverage_markdown(title, series), key=flow.replace("_", "-") + "-coverage", description=description
    )
