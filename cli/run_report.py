"""What a run prints: its inputs checked with the flows' own contract, a dry run's plan, the live progress, the
closing summary."""

from __future__ import annotations

import argparse
import time
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from candleflow import environment
from candleflow.errors import BadInputError, IncompleteRunError
from candleflow.inputs import parse_options
from candleflow.model import ChunkResult, LedgerStatus
from candleflow.report import RunSummary
from cli.output import err, out


def form_warehouse_url(given: str | None) -> str:
    """The warehouse URL as the flows' forms take it: without its password, which Prefect would keep in plain
    text with a run's parameters. The command's runs find the password in this process's environment."""
    from warehouse.engine import PASSWORD_ENV, resolve_url, without_password

    warehouse_url, password = without_password(resolve_url(given))
    if password is not None:
        environment.set_value(PASSWORD_ENV, password)
    return warehouse_url


def check_run_inputs(args: argparse.Namespace, *, connect: bool = True) -> tuple[dict[str, Any], Any]:
    """Check every input of backfill/update/repair with the flows' own contract (flows.inputs), check the
    warehouse answers (unless not `connect`: a run handed to the pool, whose workers reach it), and return the
    flow's parameters and the checked inputs (flows.inputs.RunInputs); raises BadInputError naming the input."""
    from flows.form import flag_name
    from flows.inputs import check_backfill, check_repair, check_update
    from warehouse.engine import check_reachable, ensure_database, safe_url

    warehouse_url = form_warehouse_url(args.warehouse)
    run: dict[str, Any] = {
        "provider": args.provider,
        "symbols": args.symbols,
        "timeframes": args.timeframe,
        "provider_options": parse_options(args.option) or None,
        "on_invalid": args.on_invalid,
        "max_cost_usd": args.max_cost_usd,
        "warehouse_url": warehouse_url,
        "calendar": args.calendar,
        "name": flag_name,
    }
    params: dict[str, Any] = {
        "provider": args.provider,
        "on_invalid": args.on_invalid,
        "provider_options": run["provider_options"],
        "warehouse_url": run["warehouse_url"],
        "calendar": args.calendar,
    }
    if args.command == "backfill":
        backfill = check_backfill(**run, start=args.start, end=args.end, mode=args.mode, dry_run=args.dry_run)
        checked: Any = backfill
        frames = [tf.name for tf in backfill.timeframes]
        if len(frames) > 1:  # one timeframe: the run's parameters as before
            params["timeframes"] = frames
        params.update(
            timeframe=frames[0],
            start=backfill.start,
            end=backfill.end,
            mode=str(backfill.mode),
            dry_run=backfill.dry_run,
        )
    elif args.command == "update":
        checked = check_update(**run, lookback_days=args.lookback_days, overlap_days=args.overlap_days, end=args.end)
        params["overlap_days"] = checked.overlap_days
    else:
        checked = check_repair(**run, lookback_days=args.lookback_days, end=args.end, dry_run=args.dry_run)
        params["dry_run"] = checked.dry_run
    if args.command != "backfill":  # update and repair: several timeframes, a lookback back from an end
        params.update(
            timeframes=[tf.name for tf in checked.timeframes], lookback_days=checked.lookback_days, end=checked.end
        )
    params.update(symbols=checked.universe.entries(), max_cost_usd=checked.max_cost_usd)
    writes = not params.get("dry_run", False)
    if not connect:
        return params, checked
    engine = check_reachable(params["warehouse_url"], writes=writes)  # a SQLite file locked by another process
    if writes and ensure_database(params["warehouse_url"]):
        err.print(f"candleflow: created the warehouse database {safe_url(engine.url)}", markup=False)
    return params, checked


def print_plan(command: str, inputs: Any) -> bool:
    """A dry run's plan made with plain calls and printed, without Prefect or Great Expectations (a second, where
    a flow run took 10-20 s with its temporary server); False, printing nothing, when the plan needs Prefect (the
    vendor must be asked with a key that only a Prefect Secret block holds). A quote above the budget raises
    BudgetExceededError."""
    from flows.plan import PLAIN_ASKS, plan_backfill, plan_repair, plans_without_prefect

    if not plans_without_prefect(inputs):
        return False
    started = time.perf_counter()
    summary = plan_backfill(inputs, PLAIN_ASKS) if command == "backfill" else plan_repair(inputs, PLAIN_ASKS)
    summary.elapsed_seconds = time.perf_counter() - started
    print_summary(summary, None)
    return True


class _LiveProgress:
    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.task: Any = None
        self.counts = {str(s): 0 for s in LedgerStatus}
        self.total = 0

    def started(self, total: int) -> None:
        self.total = total
        self.task = self.progress.add_task("chunks", total=total, status="")

    def advanced(self, result: ChunkResult) -> None:
        self.counts[str(result.status)] += 1
        status = " ".join(f"{k} {v}" for k, v in self.counts.items() if v)
        # a rejected chunk cut into its years or months ends as several: the bar counts them, never past its end
        self.total = max(self.total, sum(self.counts.values()))
        self.progress.update(self.task, advance=1, total=self.total, status=status)


def run_with_progress(command: str, params: dict[str, Any]) -> tuple[RunSummary | None, BaseException | None]:
    """Run the flow for `command` in this process, drawing a live progress bar on stderr."""
    from flows import progress as flow_progress
    from flows.backfill import historical_backfill
    from flows.incremental import incremental_update
    from flows.repair import repair_gaps

    flow: Any = {"backfill": historical_backfill, "update": incremental_update, "repair": repair_gaps}[command]
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[status]}"),
    )
    with Progress(*columns, console=err, transient=False) as progress:
        listener = _LiveProgress(progress)
        flow_progress.add_listener(listener)
        try:
            state = flow(**params, return_state=True)
        finally:
            flow_progress.remove_listener(listener)
    if state.is_completed():
        return state.result(), None
    error = state.result(raise_on_failure=False)
    if isinstance(error, IncompleteRunError):
        return error.summary, error
    if isinstance(error, BadInputError):
        raise error
    return None, error if isinstance(error, BaseException) else RuntimeError(str(state.message))


def print_summary(summary: RunSummary | None, error: BaseException | None) -> None:
    from warehouse.errors import describe

    if summary is None:
        err.print(f"candleflow: the run broke: {describe(error) if error else 'no result'}", markup=False)
        return
    if summary.dry_run:
        out.print(summary.headline(), markup=False)
        for chunk in summary.todo[:200]:
            out.print(f"  would fetch {chunk.label()}", markup=False)
        if len(summary.todo) > 200:
            out.print(f"  ... and {len(summary.todo) - 200} more", markup=False)
        return
    out.print(summary.headline(), markup=False)
    if summary.results and summary.elapsed_seconds > 0:
        out.print(f"  {summary.time_line()}", markup=False)
    for status, why, chunks in _problem_groups(summary):
        label = (
            chunks[0].label()
            if len(chunks) == 1
            else f"{len(chunks)} chunks ({chunks[0].label()} .. {chunks[-1].label()})"
        )
        out.print(f"  {status.upper()} {label}: {why}", markup=False)


def _problem_groups(summary: RunSummary) -> list[tuple[str, str | None, list[Any]]]:
    """The chunks that did not load; failed ones that failed for the same reason together (a full disk or a
    dead connection fails them all alike: one line, not one per chunk)."""
    groups: dict[tuple[str, str | None, int], list[Any]] = {}
    for i, result in enumerate(summary.problems()):
        alike = -1 if result.status is LedgerStatus.FAILED else i
        groups.setdefault((result.status.value, result.error, alike), []).append(result.chunk)
    return [(status, error, chunks) for (status, error, _), chunks in groups.items()]
