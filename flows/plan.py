"""Planning a run without Prefect: the chunks a backfill or a gap repair would fetch, less what the ledger holds,
with a charging vendor's quote. Nothing here imports Prefect.

The flows plan through it with Prefect tasks as their way of asking the warehouse and the vendor (retries, a
record in the UI: flows.chunks.TASK_ASKS); the command line's `--dry-run` plans with plain calls (PLAIN_ASKS), so
printing a plan needs no Prefect server and no Great Expectations: about a second instead of 10-20 s."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

import pandas as pd

from candleflow.coverage import SessionCoverage, repair_ranges
from candleflow.errors import BudgetExceededError
from candleflow.model import EVERY_SYMBOL, Chunk, LedgerEntry, every_ticker
from candleflow.planning import group_chunks, plan_chunks, select_chunks, session_of
from candleflow.report import RunSummary
from candleflow.sessions import get_calendar, schedule
from candleflow.timeframes import ChunkPeriod, get_timeframe
from flows.inputs import BackfillInputs, RepairInputs, RunInputs, SeriesRequest
from providers import get_provider
from providers.base import Provider, request_for
from warehouse import coverage
from warehouse.queries import ledger_of


class LedgerAsk(Protocol):
    """The ledger rows of a provider's series at a timeframe (ending at or after `since`, when given)."""

    def __call__(
        self,
        warehouse_url: str | None,
        provider: str,
        symbols: Sequence[str],
        timeframe: str,
        since: pd.Timestamp | None = None,
    ) -> list[LedgerEntry]: ...


@dataclass(frozen=True)
class Asks:
    """How a plan asks the outside world: the warehouse's ledger and coverage, a vendor's published versions and
    its quote. Each takes plain values (names, options, dates) so a Prefect task can stand in for it."""

    ledger: LedgerAsk
    versions: Callable[[str, Mapping[str, Any] | None, str, list[dt.date]], dict[dt.date, str | None]]
    quote: Callable[[str, Mapping[str, Any] | None, list[list[Chunk]]], float]
    coverage: Callable[..., dict[str, list[SessionCoverage]]]


def _versions(
    provider: str, options: Mapping[str, Any] | None, timeframe: str, dates: list[dt.date]
) -> dict[dt.date, str | None]:
    return get_provider(provider, options).source_versions(get_timeframe(timeframe), dates)


def _quote(provider: str, options: Mapping[str, Any] | None, groups: list[list[Chunk]]) -> float:
    return get_provider(provider, options).estimate_cost([request_for(group) for group in groups])


PLAIN_ASKS = Asks(ledger=ledger_of, versions=_versions, quote=_quote, coverage=coverage.measure_coverage)


def plans_without_prefect(inputs: RunInputs) -> bool:
    """Whether a plan for `inputs` can be made with plain calls: not when the vendor must be asked (versions, a
    quote) with a key that only a Prefect Secret block holds."""
    source = inputs.source
    asks_vendor = source.capabilities.versioned_sources or source.capabilities.charges
    return not (asks_vendor and source.settings.missing_keys())


def plan_series(series: SeriesRequest, symbols: list[str], start: dt.date, end: dt.date) -> list[Chunk]:
    """The chunks for `symbols` over the session dates start..end, cut the way the provider serves them, each
    on its symbol's exchange calendar (its time zone for session-dated windows, its sessions for validation)."""
    # every ticker (`--symbols ALL`): one chunk per session, as the vendor publishes a file or answers a request
    period = ChunkPeriod.SESSION if every_ticker(symbols) else series.provider.capabilities.chunk_period
    order = {symbol: i for i, symbol in enumerate(symbols)}
    out: list[Chunk] = []
    for calendar, group in series.by_calendar(symbols).items():
        sessions: list[dt.date] = []
        if period is ChunkPeriod.SESSION:
            sessions = [d.date() for d in schedule(start, end, calendar).index]
        tz = get_calendar(calendar).tz
        planned = plan_chunks(series.key, group, series.timeframe, start, end, period=period, sessions=sessions, tz=tz)
        out += [replace(chunk, calendar=calendar) for chunk in planned]
    return sorted(out, key=lambda c: (order[c.symbol], c.window_start))


def published_versions(series: SeriesRequest, chunks: Sequence[Chunk], asks: Asks) -> dict[dt.date, str | None] | None:
    """For providers that publish one versioned file per date: each planned date's current version (None when
    not published yet). None for other providers."""
    if not series.provider.capabilities.versioned_sources or not chunks:
        return None
    dates = sorted({session_of(c) for c in chunks})
    return asks.versions(series.provider_name, series.provider_options, series.timeframe.name, dates)


def drop_unpublished(
    summary: RunSummary, chunks: Sequence[Chunk], versions: Mapping[dt.date, str | None] | None
) -> list[Chunk]:
    """Chunks whose date has no file yet are not fetched and not errors: the summary lists them."""
    if versions is None:
        return list(chunks)
    summary.not_published += [c for c in chunks if versions.get(session_of(c)) is None]
    return [c for c in chunks if versions.get(session_of(c)) is not None]


def check_budget(
    summary: RunSummary, series: SeriesRequest, chunks: Sequence[Chunk], max_cost_usd: float | None, asks: Asks
) -> None:
    """Ask a charging vendor what fetching `chunks` costs, record it in the summary, and refuse the run before
    anything is downloaded when the quote is above `max_cost_usd`."""
    if not series.provider.capabilities.charges or not chunks:
        return
    groups = group_chunks(chunks, series.provider.symbols_per_request)
    summary.cost_usd = asks.quote(series.provider_name, series.provider_options, groups)
    if max_cost_usd is not None and summary.cost_usd > max_cost_usd:
        raise BudgetExceededError(
            f"{series.provider_name} quotes ${summary.cost_usd:,.2f} for {len(chunks)} chunks, above "
            f"max_cost_usd ${max_cost_usd:,.2f}: nothing was downloaded. Raise --max-cost-usd or fetch less"
        )


def universe_line(inputs: RunInputs) -> str | None:
    """What the symbols input resolved to, for the summary, when it named files or universes."""
    return inputs.universe.describe() if inputs.universe.referenced else None


def note_requests(summary: RunSummary, provider: Provider[Any]) -> None:
    """Say in the plan how the provider will ask for the chunks to fetch, when it groups them by their shape
    (polygon's grouped daily bars)."""
    summary.request_note = provider.describe_requests(group_chunks(summary.todo, provider.symbols_per_request))


def plan_backfill(inputs: BackfillInputs, asks: Asks) -> RunSummary:
    """A backfill's plan: every timeframe's chunks over start..end that its mode asks for (the summary counts the
    planned, held and unpublished ones), and the vendor's quote; raises BudgetExceededError above the budget."""
    summary = RunSummary(flow="historical_backfill", dry_run=inputs.dry_run, universe=universe_line(inputs))
    for timeframe in inputs.timeframes:
        series = inputs.series(timeframe)
        chunks = plan_series(series, series.symbols, inputs.start, inputs.end)
        summary.planned += len(chunks)
        versions = published_versions(series, chunks, asks)
        published = drop_unpublished(summary, chunks, versions)
        ledger = asks.ledger(inputs.warehouse_url, inputs.stored_as, series.symbols, timeframe.name)
        adjustment = str(series.provider.adjustment)
        whole = []  # a date's file loaded whole (`--symbols ALL`) holds each of its tickers' chunks of that date
        if versions is not None and not every_ticker(series.symbols):
            whole = asks.ledger(inputs.warehouse_url, inputs.stored_as, [EVERY_SYMBOL], timeframe.name)
        selection = select_chunks(published, ledger, inputs.mode, adjustment=adjustment, versions=versions, whole=whole)
        summary.skipped += len(selection.skipped)
        summary.todo += selection.todo
    if inputs.source.capabilities.named_sources:  # collections of files: say which one holds what was skipped
        summary.skip_note = (
            f"as {inputs.stored_as} (another set of files for these symbols needs its own --option source=NAME; "
            "--mode all reloads these)"
        )
    note_requests(summary, inputs.source)
    check_budget(summary, inputs.series(inputs.timeframes[0]), summary.todo, inputs.max_cost_usd, asks)
    return summary


def repair_window(inputs: RepairInputs) -> tuple[dt.date, dt.date]:
    """The session dates a repair looks at: `lookback_days` before its end (today, UTC, when none is given)."""
    last = inputs.end or dt.datetime.now(dt.UTC).date()
    first = last - dt.timedelta(days=inputs.lookback_days)
    inputs.check_dates(first, last)
    return first, last


def coverage_of(
    inputs: RunInputs, timeframe: str, first: dt.date, last: dt.date, asks: Asks
) -> dict[str, list[SessionCoverage]]:
    """The sessions first..last of each of the run's symbols at `timeframe`, each measured against its own
    calendar; a session short of bars is partial unless the provider sends bars only when traded."""
    found: dict[str, list[SessionCoverage]] = {}
    for calendar, symbols in inputs.by_calendar().items():
        found |= asks.coverage(
            inputs.warehouse_url,
            inputs.stored_as,
            symbols,
            timeframe,
            first,
            last,
            calendar=calendar,
            partial=not inputs.source.capabilities.bars_only_when_traded,
        )
    return found


def plan_repair(inputs: RepairInputs, asks: Asks) -> RunSummary:
    """A gap repair's plan: the chunks covering the lookback's sessions that lack bars and that the ledger does not
    explain (one per run of consecutive such sessions, cut at the timeframe's calendar periods), and the vendor's
    quote; raises BudgetExceededError above the budget."""
    first, last = repair_window(inputs)
    summary = RunSummary(
        flow="repair_gaps", dry_run=inputs.dry_run, sessions_to_repair=0, universe=universe_line(inputs)
    )
    for timeframe in inputs.timeframes:
        series = inputs.series(timeframe)
        chunks: list[Chunk] = []
        for symbol, sessions in coverage_of(inputs, timeframe.name, first, last, asks).items():
            summary.sessions_to_repair = (summary.sessions_to_repair or 0) + sum(c.repairable for c in sessions)
            for range_start, range_end in repair_ranges(sessions):
                chunks += plan_series(series, [symbol], range_start, range_end)
        summary.planned += len(chunks)
        summary.todo += drop_unpublished(summary, chunks, published_versions(series, chunks, asks))
    note_requests(summary, inputs.source)
    check_budget(summary, inputs.series(inputs.timeframes[0]), summary.todo, inputs.max_cost_usd, asks)
    return summary
