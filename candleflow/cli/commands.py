"""What the `candleflow` subcommands do (the command-line layer: it may use flows and the warehouse)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from candleflow.errors import BadInputError, IncompleteRunError
from candleflow.inputs import check_date_range, parse_date, parse_options, parse_symbols
from candleflow.model import ChunkResult, LedgerStatus
from candleflow.report import RunSummary
from candleflow.sessions import check_in_range
from candleflow.timeframes import get_timeframe

# Not a terminal (a pipe, a log, CI): rich would assume 80 columns and squash the tables.
# emoji=False: symbols such as CAR or DOG inside `synthetic:CAR:1d` must not print as emoji. User strings in
# tables go in as Text (never markup), so `[...]` in a symbol, a path or an error prints as written.
out = Console(highlight=False, soft_wrap=True, emoji=False, width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)


def cells(*values: object) -> list[Text]:
    """Table cells that print exactly as written (no markup, no emoji codes)."""
    return [Text(str(v)) for v in values]


def check_run_inputs(args: argparse.Namespace) -> tuple[dict[str, Any], Any]:
    """Check every input of backfill/update/repair with the flows' own contract (flows.inputs), check the
    warehouse answers, and return the flow's parameters and the checked inputs (flows.inputs.RunInputs); raises
    BadInputError naming the input."""
    from flows.inputs import check_backfill, check_repair, check_update, flag_name
    from warehouse.engine import PASSWORD_ENV, check_reachable, ensure_database, resolve_url, safe_url, without_password

    # The run's warehouse_url parameter never holds the password (Prefect stores parameters in plain text): the
    # flow runs in this process and finds it in this process's environment.
    warehouse_url, password = without_password(resolve_url(args.warehouse))
    if password is not None:
        os.environ[PASSWORD_ENV] = password
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
        update = check_update(**run, lookback_days=args.lookback_days, overlap_days=args.overlap_days, end=args.end)
        checked = update
        params.update(
            timeframes=[tf.name for tf in update.timeframes],
            lookback_days=update.lookback_days,
            overlap_days=update.overlap_days,
            end=update.end,
        )
    else:
        repair = check_repair(**run, lookback_days=args.lookback_days, end=args.end, dry_run=args.dry_run)
        checked = repair
        params.update(
            timeframes=[tf.name for tf in repair.timeframes],
            lookback_days=repair.lookback_days,
            end=repair.end,
            dry_run=repair.dry_run,
        )
    params.update(symbols=checked.symbols, max_cost_usd=checked.max_cost_usd)
    writes = not params.get("dry_run", False)
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


def _filters(args: argparse.Namespace) -> tuple[str | None, list[str] | None, str | None]:
    symbols = parse_symbols(args.symbols) if args.symbols else None
    timeframe = get_timeframe(args.timeframe).name if args.timeframe else None
    return args.provider, symbols, timeframe


def _when(ts: Any, intraday: bool) -> str:
    return ts.strftime("%Y-%m-%d %H:%M") if intraday else ts.strftime("%Y-%m-%d")


def status(args: argparse.Namespace) -> int:
    """Coverage per (provider, symbol, timeframe): bars, first and last, sessions missing, ledger outcomes."""
    from candleflow.coverage import SessionState
    from candleflow.settings import run_settings
    from flows.inputs import flag_name, symbol_calendars
    from warehouse.coverage import measure_coverage
    from warehouse.engine import check_reachable
    from warehouse.queries import has_schema, ledger_counts, series_summary

    provider, symbols, timeframe = _filters(args)
    engine = check_reachable(args.warehouse)
    if not has_schema(engine):
        if args.json:
            out.print_json("[]")
            return 0
        out.print("the warehouse is empty: run candleflow backfill first")
        return 0
    series = series_summary(engine, provider, symbols, timeframe)
    counts = ledger_counts(engine, provider, symbols, timeframe)
    table = Table(
        "provider",
        "symbol",
        "tf",
        "bars",
        "first",
        "last",
        "sessions",
        "missing",
        "partial",
        "chunks " + "/".join(LedgerStatus),
        title="candleflow coverage (sessions: the symbol's exchange calendar from first to last bar)",
    )
    listed: list[dict[str, Any]] = []
    for row in series.itertuples():
        tf = get_timeframe(row.timeframe)
        first, last = row.first.date(), row.last.date()
        calendar = symbol_calendars(None, [row.symbol], run_settings().calendars, flag_name)[row.symbol]
        partial = _counts_partial(row.provider)
        (coverage,) = measure_coverage(
            engine,
            row.provider,
            [row.symbol],
            row.timeframe,
            first,
            last,
            calendar=calendar,
            partial=partial,
            closed_only=False,
        ).values()
        gaps = [c for c in coverage if c.state is not SessionState.COMPLETE]
        missing = sum(g.present == 0 for g in gaps)
        mine = counts[
            (counts.provider == row.provider) & (counts.symbol == row.symbol) & (counts.timeframe == row.timeframe)
        ]
        by_status = dict(zip(mine.status, mine.chunks, strict=True))
        chunk_text = "/".join(str(by_status.get(str(s), 0)) for s in LedgerStatus)
        listed.append(
            {
                "provider": row.provider,
                "symbol": row.symbol,
                "timeframe": row.timeframe,
                "calendar": calendar,
                "bars": int(row.bars),
                "first": row.first.isoformat(),
                "last": row.last.isoformat(),
                "sessions": len(coverage),
                "missing": missing,
                "partial": len(gaps) - missing,
                "chunks": {str(s): int(by_status.get(str(s), 0)) for s in LedgerStatus},
            }
        )
        table.add_row(
            *cells(
                row.provider,
                row.symbol,
                row.timeframe,
                f"{row.bars:,}",
                _when(row.first, tf.intraday),
                _when(row.last, tf.intraday),
                len(coverage),
                missing,
                len(gaps) - missing,
                chunk_text,
            )
        )
    if args.json:
        out.print_json(json.dumps(listed))
        return 0
    out.print(table)
    if series.empty:
        out.print("no bars match these filters")
    return 0


def _counts_partial(provider: str) -> bool:
    """Whether fewer bars than a full session is a gap for `provider`'s bars."""
    from providers import PROVIDERS, provider_of

    name = provider_of(provider)
    return name not in PROVIDERS or not PROVIDERS[name].capabilities.bars_only_when_traded


def gaps(args: argparse.Namespace) -> int:
    """Sessions in [start, end] without bars (or with fewer than a full session has), with the reason: as ranges
    of consecutive sessions sharing a state and reason, or (--json) every session, one object each."""
    from candleflow.coverage import SessionState, incomplete_ranges
    from candleflow.settings import run_settings
    from flows.inputs import flag_name, symbol_calendars
    from providers import check_stored_key
    from warehouse.coverage import measure_coverage
    from warehouse.engine import check_reachable

    provider = args.provider
    check_stored_key(provider)  # a provider's name, or `csv:<source>` for a named collection of files
    tf = get_timeframe(args.timeframe)
    symbols = parse_symbols(args.symbols)
    start, end = parse_date(args.start, "start"), parse_date(args.end, "end")
    check_date_range(start, end)
    calendars = symbol_calendars(args.calendar, symbols, run_settings().calendars, flag_name)
    for calendar in set(calendars.values()):
        check_in_range(start, end, calendar)
    engine = check_reachable(args.warehouse)
    expected_total = 0
    counts_partial = _counts_partial(provider)
    found: list[dict[str, Any]] = []
    table = Table("symbol", "sessions", "state", "bars", "why", title=f"gaps {provider} {tf.name} {start}..{end}")
    by_symbol: dict[str, list[Any]] = {}
    for calendar in dict.fromkeys(calendars.values()):
        of_calendar = [symbol for symbol in symbols if calendars[symbol] == calendar]
        by_symbol |= measure_coverage(
            engine,
            provider,
            of_calendar,
            tf.name,
            start,
            end,
            calendar=calendar,
            partial=counts_partial,
            closed_only=False,
        )
    for symbol in symbols:
        coverage = by_symbol[symbol]
        expected_total += len(coverage)
        by_day = {c.session: c for c in coverage}
        found += [
            {
                "symbol": symbol,
                "session": str(c.session),
                "state": str(c.state),
                "expected": c.expected,
                "present": c.present,
                "reason": str(c.reason),
            }
            for c in coverage
            if c.state is not SessionState.COMPLETE
        ]
        for r in incomplete_ranges(coverage):
            when = f"{r.first}" if r.sessions == 1 else f"{r.first}..{r.last} ({r.sessions})"
            days = [by_day[d] for d in by_day if r.first <= d <= r.last]
            present = sum(c.present for c in days)
            expected = sum(c.expected for c in days)
            table.add_row(*cells(symbol, when, r.state, f"{present}/{expected}", r.reason))
    if args.json:
        out.print_json(json.dumps(found))
        return 0 if not found else 1
    if found:
        out.print(table)
    what = "missing or partial bars" if counts_partial else "no bars"
    out.print(f"{len(found)} session(s) with {what} out of {expected_total} expected")
    if not counts_partial:
        out.print(f"({provider} has no bar for an interval without trades, so short sessions are not gaps)")
    return 0 if not found else 1
