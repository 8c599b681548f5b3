"""Artifacts a run publishes in the Prefect UI: a progress bar while chunks run, a summary table and a coverage
grid."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from uuid import UUID

from prefect.artifacts import create_markdown_artifact, create_progress_artifact, update_progress_artifact

from candleflow.coverage import SessionCoverage, coverage_markdown
from candleflow.report import RunSummary


def start_progress(total: int, flow: str) -> UUID | None:
    if total == 0:
        return None
    artifact_id = create_progress_artifact(progress=0.0, description=f"{flow}: chunks done out of {total}")
    return artifact_id if isinstance(artifact_id, UUID) else None


def advance_progress(artifact_id: UUID | None, done: int, total: int) -> None:
    if artifact_id is not None and total:
        update_progress_artifact(artifact_id=artifact_id, progress=100.0 * done / total)


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
