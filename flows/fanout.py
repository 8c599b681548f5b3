"""One run shared by every worker of the pool: a deployed backfill or update planning more than
CANDLEFLOW_PARTITION_BARS bars is cut into partitions (candleflow.partitions), each a child flow run of the
partition deployment (flows/partition.py) on the work pool, so every worker, on any machine, takes some.

The parent keeps at most CANDLEFLOW_PARTITIONS_AT_ONCE children running, shows one progress over them (their
chunk counts, from their run labels), runs a crashed child again (its worker or machine died: up to
CANDLEFLOW_PARTITION_RERUNS times), and ends with one summary read from the ledger, where each child committed
its chunks with their bars. Rate limits and warehouse slots are the server's global concurrency limits: they hold
across the children as across the tasks of one run."""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any
from uuid import UUID

from prefect.client.schemas.objects import FlowRun, StateType
from prefect.logging import get_run_logger
from prefect.runtime import deployment as current_deployment
from prefect.runtime import flow_run as current_run

from candleflow.model import EVERY_SYMBOL, Chunk, ChunkResult, LedgerEntry, LedgerStatus
from candleflow.partitions import Partition, cut_partitions, planned_bars
from candleflow.report import RunSummary
from candleflow.settings import run_settings, team_server_settings
from flows.inputs import RunInputs
from flows.plan import LedgerAsk
from flows.runs import name_of
from tasks.partitions import (
    last_heartbeat,
    mark_crashed,
    partition_deployment,
    read_children,
    reported,
    run_again,
    start_child,
)
from tasks.reporting import CHUNKS_ENDED_LABEL, advance_progress, start_progress

POLL_SECONDS = 1.0  # how often the parent reads its children's states
FAN_OUT_FLOWS = ("historical_backfill", "incremental_update")
_FINAL = (StateType.COMPLETED, StateType.FAILED, StateType.CANCELLED, StateType.CRASHED)
_inside = contextvars.ContextVar("candleflow_inside_partition", default=False)


def in_partition() -> bool:
    """Whether this is a partition's own run (its parent reports and records the run as a whole)."""
    return _inside.get()


@contextlib.contextmanager
def inside_partition() -> Iterator[None]:
    """A partition's own run: it does its part in its process and never fans out again."""
    token = _inside.set(True)
    try:
        yield
    finally:
        _inside.reset(token)


def session_hours(inputs: RunInputs) -> float:
    """The hours of a session the provider's bars cover (for the bar estimates batches and partitions are cut by)."""
    return 16.0 if inputs.source.capabilities.session_hours == "extended" else 6.5


def wants_fan_out(summary: RunSummary, inputs: RunInputs) -> bool:
    """Whether this run hands its chunks to the pool: a deployment's run (on a worker) of a backfill or update,
    not a partition itself, planning more bars than CANDLEFLOW_PARTITION_BARS; an update of every ticker stays
    one run (a session's file is one chunk)."""
    if _inside.get() or summary.flow not in FAN_OUT_FLOWS or current_deployment.get_id() is None:
        return False
    if summary.flow == "incremental_update" and inputs.universe.every:
        return False
    return planned_bars(summary.todo, session_hours(inputs)) > run_settings().partition_bars


@dataclass
class Child:
    partition: Partition
    parameters: dict[str, Any]  # the partition flow's: `of`, the parameters of that flow, `part`, `parts`, `parent`
    name: str
    run_id: UUID | None = None
    attempts: int = 0
    run: FlowRun | None = None

    @property
    def message(self) -> str | None:
        """Its state's message (why it crashed or failed)."""
        return self.run.state.message if self.run is not None and self.run.state else None

    @property
    def state(self) -> StateType | None:
        return self.run.state_type if self.run is not None else None

    def chunks_ended(self) -> int:
        """Its chunks that ended, as its run's labels say (all of them once it ended by itself)."""
        if self.state in (StateType.COMPLETED, StateType.FAILED):
            return len(self.partition.chunks)
        labels = self.run.labels if self.run is not None else None
        try:
            return min(int((labels or {}).get(CHUNKS_ENDED_LABEL, 0)), len(self.partition.chunks))
        except (TypeError, ValueError):
            return 0


def child_parameters(summary: RunSummary, given: Mapping[str, Any], part: Partition, end: dt.date) -> dict[str, Any]:
    """The parameters of the flow a partition runs: the parent's as given, its symbols and timeframe (and, for a
    backfill, its dates) replaced by the partition's. Named universes and files were resolved by the parent, so
    every child fetches the symbols the parent planned."""
    parameters = {k: v for k, v in given.items() if v is not None}
    symbols: list[str] = [] if part.every else list(part.symbols)
    parameters.update(universe="ALL" if part.every else "tickers", symbols=symbols)
    if summary.flow == "historical_backfill":
        parameters.update(timeframe=part.timeframe, timeframes=[], start=part.start.isoformat())
        parameters.update(end=part.end.isoformat(), dry_run=False)
    else:
        parameters.update(timeframes=[part.timeframe], end=end.isoformat())
    return parameters


def run_partitions(summary: RunSummary, inputs: RunInputs, last: dt.date, ledger: LedgerAsk) -> bool:
    """Run the summary's chunks as partitions on the pool and put their results in the summary; False, doing
    nothing, when the partition deployment is not on the server (the run then goes on in its own process)."""
    logger = get_run_logger()
    found = partition_deployment()
    if found is None:
        logger.warning(
            "this run plans more than CANDLEFLOW_PARTITION_BARS bars, but the deployment partition/partition is not "
            "on the server (prefect deploy --all deploys it): it runs in this process alone"
        )
        return False
    deployment, pool = found
    settings = run_settings()
    hours = session_hours(inputs)
    parts = cut_partitions(
        summary.todo, settings.partition_bars, session_hours=hours, split_series=summary.flow != "incremental_update"
    )
    given = dict(current_run.parameters or {})
    children = [Child(p, child_parameters(summary, given, p, last), "") for p in parts]
    parent = str(current_run.get_id() or "")
    for child in children:
        child.parameters = {"of": summary.flow, "parameters": child.parameters, "part": child.partition.number}
        child.parameters |= {"parts": len(parts), "parent": parent}
        child.name = name_of("partition", child.parameters)
    logger.info(
        "%d chunks (about %s bars) cut into %d partitions of about %s bars, run on pool %r, %d at once",
        len(summary.todo),
        f"{planned_bars(summary.todo, hours):,.0f}",
        len(parts),
        f"{settings.partition_bars:,}",
        pool,
        settings.partitions_at_once,
    )
    total = len(summary.todo)
    artifact = start_progress(total, summary.flow)
    watch = SignsOfLife(team_server_settings().crash_after_seconds)
    waiting = list(children)
    running: list[Child] = []
    done_before = -1
    while waiting or running:
        while waiting and len(running) < settings.partitions_at_once:
            child = waiting.pop(0)
            child.run_id = start_child(deployment, child.parameters, child.name)
            child.attempts = 1
            running.append(child)
        time.sleep(POLL_SECONDS)
        runs = read_children([c.run_id for c in running if c.run_id is not None])
        for child in list(running):
            child.run = runs.get(child.run_id) if child.run_id is not None else None
            if child.state not in _FINAL:
                watch.check(child)
                continue
            if child.state is StateType.CRASHED and child.attempts <= settings.partition_reruns:
                why = child.message
                logger.warning("partition %s crashed (%s): running it again", child.name, why or "no message")
                run_again(child.run_id, f"run again by its parent after crashing: {why or 'no message'}")  # type: ignore[arg-type]
                child.attempts += 1
                child.run = None
                continue
            running.remove(child)
            logger.info("partition %s ended %s", child.name, child.state.value if child.state else "?")
        done = sum(c.chunks_ended() for c in children)
        if done != done_before and done < total:
            advance_progress(artifact, done, total, summary.flow)
            done_before = done
    summary.results = results_of(children, inputs, ledger)
    summary.partitions = len(parts)
    summary.reported = {
        what: sum(reported(c.run, what) for c in children if c.run)
        for what in ("written", "unchanged", "revised", "removed")
    }
    advance_progress(artifact, total, total, summary.flow)
    return True


class SignsOfLife:
    """Crashes a child that stopped showing it is alive: Pending or Running for more than `crash_after` seconds
    with no heartbeat for as long. The server's heartbeat Automation does this for runs it saw send one; a run
    whose process died in its first second (its worker killed as it started it) never sent one, and would hold
    its parent for ever. Each child is asked about at most every CHECK_SECONDS."""

    CHECK_SECONDS = 10.0

    def __init__(self, crash_after: float) -> None:
        self.crash_after = crash_after
        self.checked: dict[UUID, float] = {}

    def check(self, child: Child) -> None:
        run = child.run
        if run is None or run.state is None or child.run_id is None:
            return
        now = time.monotonic()
        if now - self.checked.get(child.run_id, float("-inf")) < self.CHECK_SECONDS:
            return
        since = run.state.timestamp  # when it became Pending or Running
        if since is None or (dt.datetime.now(dt.UTC) - since).total_seconds() < self.crash_after:
            return
        self.checked[child.run_id] = now
        beat = last_heartbeat(child.run_id, since)
        if beat is not None and (dt.datetime.now(dt.UTC) - beat).total_seconds() < self.crash_after:
            return
        state = run.state_type.value.title() if run.state_type else "?"
        mark_crashed(
            child.run_id,
            f"No heartbeat for {self.crash_after:.0f} s while {state} (seen by its parent run): its process died",
        )


def results_of(children: Sequence[Child], inputs: RunInputs, ledger: LedgerAsk) -> list[ChunkResult]:
    """Each chunk's result as its ledger row says, for the partitions that ran all their chunks (ended Completed
    or Failed); the chunks of a partition that did not (cancelled, or crashed past its reruns) failed, naming it:
    what it committed before stays committed, and the same run fetches the rest."""
    by_series: dict[str, set[str]] = {}
    for child in children:
        by_series.setdefault(child.partition.timeframe, set()).update(child.partition.symbols)
    entries: dict[tuple[str, str], list[LedgerEntry]] = {}
    for timeframe, symbols in by_series.items():
        for entry in ledger(inputs.warehouse_url, inputs.stored_as, sorted(symbols), timeframe):
            entries.setdefault((entry.symbol, entry.timeframe), []).append(entry)
    results: list[ChunkResult] = []
    for child in children:
        ran = child.state in (StateType.COMPLETED, StateType.FAILED)
        why = _unfinished(child)
        for chunk in child.partition.chunks:
            own = entries.get((chunk.symbol, chunk.timeframe), [])
            results += _result(chunk, own) if ran else [ChunkResult(chunk, LedgerStatus.FAILED, error=why)]
    return sorted(results, key=lambda r: r.chunk)


def _unfinished(child: Child) -> str:
    state = child.state.value.title() if child.state else "unknown"
    message = child.message
    tries = f" after {child.attempts} attempts" if child.attempts > 1 else ""
    return f"partition {child.name} ended {state}{tries}" + (f": {message}" if message else "")


def _result(chunk: Chunk, entries: Sequence[LedgerEntry]) -> list[ChunkResult]:
    """The chunk's outcome from the ledger: the row covering its window (an update's extended row), or the rows
    of its parts (a rejected chunk cut into its years or months); failed when there is none."""
    covering = [e for e in entries if e.covers(chunk)]
    if covering:
        entry = max(covering, key=lambda e: e.window_start)
        return [ChunkResult(chunk, entry.status, rows=entry.rows or 0, error=entry.error)]
    inside = [e for e in entries if chunk.window_start <= e.window_start and e.window_end <= chunk.window_end]
    if inside:
        return [
            ChunkResult(
                replace(chunk, window_start=e.window_start, window_end=e.window_end),
                e.status,
                rows=e.rows or 0,
                error=e.error,
            )
            for e in sorted(inside, key=lambda e: e.window_start)
        ]
    what = "every ticker's" if chunk.symbol == EVERY_SYMBOL else "its"
    return [ChunkResult(chunk, LedgerStatus.FAILED, error=f"no ledger row holds {what} window after its partition ran")]
