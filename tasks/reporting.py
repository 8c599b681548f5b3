"""Artifacts a run publishes in the Prefect UI: a progress bar while chunks run, a summary table and a coverage
grid."""

from __future__ import annotations

import contextlib
import contextvars
import threading
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from uuid import UUID

from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.client.orchestration import get_client
from prefect.runtime import flow_run

from candleflow.coverage import SessionCoverage, coverage_markdown
from candleflow.report import RunSummary
from candleflow.universes import Universe

# The run's labels that count its chunks: a crash notice sent by the server reads them (deployments/automations.py)
CHUNKS_ENDED_LABEL = "candleflow.chunks_ended"
CHUNKS_PLANNED_LABEL = "candleflow.chunks_planned"


def progress_text(flow: str, done: int, total: int) -> str:
    """`historical_backfill: 1 of 2 chunks done`: the progress artifact's description."""
    return f"{flow}: {done} of {total} chunk{'' if total == 1 else 's'} done"


def start_progress(total: int, flow: str) -> UUID | None:
    if total == 0:
        return None
    label_progress(0, total)
    artifact_id = create_progress_artifact(progress=0.0, description=progress_text(flow, 0, total))
    return artifact_id if isinstance(artifact_id, UUID) else None


LABEL_EVERY_SECONDS = 2.0  # the run's chunk-count labels, at most this often (and always at the end)
LAST_LABEL_WAIT_SECONDS = 10.0  # a run's last count is waited for this long at most
_labelled: dict[UUID, float] = {}  # by progress artifact: when its run's labels were last asked for
_asked: dict[UUID, int] = {}  # by progress artifact: the highest count asked for
_writing = threading.Lock()  # one label call at a time, so a count never overwrites a higher one


def advance_progress(artifact_id: UUID | None, done: int, total: int, flow: str) -> None:
    """The bar and its description, in the one update call the bar alone would cost; and, at most every
    LABEL_EVERY_SECONDS and at the end, the count on the run's labels. A crash notice reads at most that much
    fewer chunks than ended, and says they stay committed, which they do.

    Labels are written off the flow's thread (a daemon thread each, a lower count skipped once a higher one is
    asked): writing them takes the server's lock on the run, which its task states take too, and a 500-series
    update waited up to 1.7 s there between two batches. The last count is waited for, bounded, so a run ends
    with it written; a server gone by then holds up nothing (a daemon thread does not keep a process alive)."""
    if artifact_id is None or not total:
        return
    description = progress_text(flow, done, total)
    update_progress_artifact(artifact_id=artifact_id, progress=100.0 * done / total, description=description)
    now = time.monotonic()
    if done < total and now - _labelled.get(artifact_id, float("-inf")) < LABEL_EVERY_SECONDS:
        return
    _labelled[artifact_id] = now
    _asked[artifact_id] = max(done, _asked.get(artifact_id, 0))
    context = contextvars.copy_context()  # the run's context: its id and its server

    def write() -> None:
        with _writing:
            if _asked.get(artifact_id, done) > done:
                return  # a higher count was asked meanwhile: it writes itself
            with contextlib.suppress(Exception):  # a label is not worth a traceback: the run's outcome stands
                context.run(label_progress, done, total)

    writer = threading.Thread(target=write, name="candleflow-labels", daemon=True)
    writer.start()
    if done >= total:
        writer.join(LAST_LABEL_WAIT_SECONDS)
        _labelled.pop(artifact_id, None)
        _asked.pop(artifact_id, None)


def label_progress(done: int, total: int) -> None:
    """Keep on the flow run how many of its chunks ended (each committed with its ledger row): when the run's
    process dies, it can say nothing itself, and the server's notice reads the count from here."""
    run_id = flow_run.get_id()
    if run_id is None:
        return
    with get_client(sync_client=True) as client:
        client.update_flow_run_labels(UUID(str(run_id)), {CHUNKS_ENDED_LABEL: done, CHUNKS_PLANNED_LABEL: total})


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


def publish_universe(flow: str, universe: Universe) -> None:
    """What the run's symbols input resolved to, one row per symbol with the entry that brought it in (the first
    one: a symbol in two universes is fetched once), as a table artifact."""
    rows: list[dict[str, str]] = []
    seen: set[str] = set()
    if universe.every:  # every ticker: which ones, each session's file or answer says (the bars keep them)
        rows.append({"symbol": "ALL", "from": "ALL", "note": "every ticker the provider's data holds, per session"})
    for part in universe.parts:
        for symbol in part.symbols:
            if symbol not in seen:
                seen.add(symbol)
                rows.append({"symbol": symbol, "from": part.entry, "note": part.note})
    create_table_artifact(table=rows, key=flow.replace("_", "-") + "-universe", description=universe.describe())
