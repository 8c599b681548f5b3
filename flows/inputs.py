"""One input contract for every way a run starts: the command line, the Prefect UI's run form, a deployment's
parameters, Python. Each flow checks its own inputs with these functions before it fetches anything, and the
command line calls the same functions first, so a bad input is refused the same way everywhere: a
BadInputError of one line naming the input and the fix (exit 2 on the command line, a Failed run elsewhere).

Each input is first read on its own by the flow's form (flows/form.py); then what depends on this machine is
checked (the provider's options and keys, the calendars, the warehouse answering) and the run's records are
built. Nothing here imports Prefect, so the command line refuses bad input without starting it.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from candleflow.errors import BadInputError
from candleflow.inputs import ANY_PROVIDER, parse_symbols
from candleflow.model import OnInvalid
from candleflow.planning import PlanMode
from candleflow.sessions import DEFAULT_CALENDAR, check_in_range, get_calendar
from candleflow.settings import oracle_settings, run_settings
from candleflow.timeframes import Timeframe
from candleflow.universes import Named, NamedLookup, Universe, resolve
from flows.form import BackfillForm, FreshnessForm, NameStyle, RepairForm, RunForm, UpdateForm, param_name, read_form
from providers import PROVIDERS, get_provider, provider_of
from providers.base import Provider, check_every_symbol
from warehouse.engine import check_reachable, parse_url, resolve_url
from warehouse.universes import load_universe

if TYPE_CHECKING:
    from ingest.freshness import FreshnessReport


class _SymbolCalendars:
    """Each symbol's exchange calendar, for requests that hold `symbols`, `calendars` and a default `calendar`."""

    symbols: list[str]
    calendars: Mapping[str, str]
    calendar: str

    def calendar_of(self, symbol: str) -> str:
        return self.calendars.get(symbol, self.calendar)

    def by_calendar(self, symbols: Iterable[str] | None = None) -> dict[str, list[str]]:
        """The symbols grouped by their exchange calendar, in order."""
        groups: dict[str, list[str]] = {}
        for symbol in self.symbols if symbols is None else symbols:
            groups.setdefault(self.calendar_of(symbol), []).append(symbol)
        return groups


@dataclass(frozen=True)
class SeriesRequest(_SymbolCalendars):
    """One provider and timeframe for a list of symbols, checked."""

    provider_name: str
    provider: Provider[Any]  # built from the options and the environment: it answers what kind of provider it is
    provider_options: Mapping[str, Any]
    timeframe: Timeframe
    symbols: list[str]
    calendar: str  # the run's exchange calendar (the one most symbols follow)
    stored_as: str = ""  # the provider key of its bars and ledger rows: the name, or `csv:<source>`
    calendars: Mapping[str, str] = field(default_factory=dict)  # symbol -> its exchange calendar

    @property
    def key(self) -> str:
        return self.stored_as or self.provider_name


@dataclass(frozen=True)
class RunInputs(_SymbolCalendars):
    """What every run needs, checked: which series, what to do with invalid chunks, a budget, a warehouse."""

    provider: str
    symbols: list[str]
    timeframes: list[Timeframe]
    provider_options: dict[str, Any]
    source: Provider[Any]
    calendar: str  # the run's calendar: the `calendar` input, else the one most symbols follow
    calendars: dict[str, str]  # symbol -> its calendar (the run's, else CANDLEFLOW_CALENDARS, else XNYS)
    on_invalid: OnInvalid
    max_cost_usd: float | None
    warehouse_url: str | None
    stored_as: str  # the provider key in the warehouse: the provider's name, or `csv:<source>` for a named source
    # what the symbols input resolved to (files and named universes), for the run's report
    universe: Universe = field(default_factory=lambda: Universe([]))

    def series(self, timeframe: Timeframe, symbols: list[str] | None = None) -> SeriesRequest:
        return SeriesRequest(
            self.provider,
            self.source,
            self.provider_options,
            timeframe,
            self.symbols if symbols is None else symbols,
            self.calendar,
            self.stored_as,
            self.calendars,
        )

    def check_dates(self, start: dt.date, end: dt.date) -> None:
        """Every calendar of the run knows the dates."""
        for calendar in sorted(set(self.calendars.values()) | {self.calendar}):
            check_in_range(start, end, calendar)

    def freshness(self, max_lag: int, *, ask_vendor: bool, flow_run_id: str | None = None) -> FreshnessReport:
        """The freshness of the run's series over its timeframes (ingest.freshness.universe_freshness)."""
        from ingest.freshness import universe_freshness

        return universe_freshness(
            self.warehouse_url,
            self.source,
            self.stored_as,
            self.symbols,
            [tf.name for tf in self.timeframes],
            self.calendars,
            max_lag,
            ask_vendor=ask_vendor,
            flow_run_id=flow_run_id,
        )


@dataclass(frozen=True)
class BackfillInputs(RunInputs):
    start: dt.date = field(default=dt.date.min)
    end: dt.date = field(default=dt.date.min)
    mode: PlanMode = PlanMode.MISSING
    dry_run: bool = False


@dataclass(frozen=True)
class UpdateInputs(RunInputs):
    lookback_days: int = 30
    overlap_days: int | None = None
    end: dt.date | None = None


@dataclass(frozen=True)
class RepairInputs(RunInputs):
    lookback_days: int = 30
    end: dt.date | None = None
    dry_run: bool = False


@dataclass(frozen=True)
class FreshnessInputs(RunInputs):
    max_lag_sessions: int = 1
    ask_vendor: bool = True


def check_freshness_inputs(*, name: NameStyle = param_name, **values: Any) -> FreshnessInputs:
    """Check a freshness check's inputs: the universe as an update takes it, no key needed (without one, the
    vendor is not asked which symbols it stopped listing)."""
    form = read_form(FreshnessForm, values, name)
    checked = _run(form, name, keys=False)
    check_reachable(checked.warehouse_url)
    return FreshnessInputs(**_common(checked), max_lag_sessions=form.max_lag_sessions, ask_vendor=form.ask_vendor)


def check_run(*, name: NameStyle = param_name, **values: Any) -> RunInputs:
    """Check what every run needs; raises BadInputError naming the first bad input."""
    return _run(read_form(RunForm, values, name), name)


def _run(form: RunForm, name: NameStyle, *, keys: bool = True) -> RunInputs:
    """The run of a checked form, with what depends on this machine checked in this order: the provider's
    options and keys, its inputs (a directory), the settings, the calendars, the Oracle client."""
    options = dict(form.provider_options or {})
    source = get_provider(form.provider, options)  # the provider's own options model rejects bad options
    settings = run_settings()  # CANDLEFLOW_RETRIES=abc and the like: one line naming the variable
    if keys:
        source.check_keys()
    universe = resolve_symbols(form.symbols, source, form.warehouse_url)
    symbols = universe.symbols
    if universe.every:
        check_every_symbol(source, form.timeframes)
    source.check_inputs(symbols, form.timeframes)  # options that depend on this machine: a directory
    calendars = symbol_calendars(form.calendar or options.get("calendar"), symbols, settings.calendars, name)
    if parse_url(resolve_url(form.warehouse_url)).get_backend_name() == "oracle":
        oracle_settings()
    return RunInputs(
        provider=form.provider,
        symbols=symbols,
        timeframes=form.timeframes,
        provider_options=options,
        source=source,
        calendar=Counter(calendars.values()).most_common(1)[0][0],
        calendars=calendars,
        on_invalid=form.on_invalid,
        max_cost_usd=form.max_cost_usd,
        warehouse_url=form.warehouse_url,
        stored_as=source.stored_as,
        universe=universe,
    )


def resolve_symbols(entries: list[str], source: Provider[Any], warehouse_url: str | None) -> Universe:
    """The symbols input resolved (candleflow.universes): files read here, named universes from the warehouse,
    each ticker checked by the provider's rule."""
    return resolve(entries, source.capabilities.symbol_rule, kept_universes(warehouse_url))


def kept_universes(warehouse_url: str | None) -> NamedLookup:
    """How `universe:NAME` is looked up: in the run's warehouse."""

    def named(name: str) -> Named:
        kept = load_universe(warehouse_url, name)
        when = kept.refreshed_at.strftime("%Y-%m-%d %H:%M UTC")
        return Named(kept.symbols, f"refreshed {when} from {kept.definition}")

    return named


def query_symbols(value: str, provider_key: str | None, warehouse_url: str | None) -> list[str]:
    """The symbols of a query (`status`, `gaps`): tickers, files and named universes as a run takes them, by the
    rule of the provider queried (`csv:quandl` is csv's), or of any provider when none is named."""
    cls = PROVIDERS.get(provider_of(provider_key)) if provider_key else None
    rule = cls.capabilities.symbol_rule if cls is not None else ANY_PROVIDER
    return resolve(parse_symbols(value, rule, references=True), rule, kept_universes(warehouse_url)).symbols


def symbol_calendars(
    run_calendar: object, symbols: list[str], per_symbol: Mapping[str, str], name: NameStyle
) -> dict[str, str]:
    """Each symbol's exchange calendar: the run's when given, else its own from CANDLEFLOW_CALENDARS, else XNYS.
    Unknown calendar names are bad input."""
    if run_calendar is not None and not isinstance(run_calendar, str):
        raise BadInputError(f"{name('calendar')} must be a calendar name such as XNYS, XLON or CME_Equity")
    mapping = {str(k).strip().upper(): str(v) for k, v in per_symbol.items()}
    out = {s: (run_calendar or mapping.get(s) or DEFAULT_CALENDAR).strip() for s in symbols}
    for calendar in sorted(set(out.values())):
        try:
            get_calendar(calendar)
        except BadInputError as exc:
            raise BadInputError(f"{name('calendar')}: {exc}") from None
    return out


def _common(run: RunInputs) -> dict[str, Any]:
    return {f: getattr(run, f) for f in RunInputs.__dataclass_fields__}


def check_backfill(*, name: NameStyle = param_name, **values: Any) -> BackfillInputs:
    """Check a backfill's inputs (one timeframe, inclusive session dates start..end), the warehouse last (see
    warehouse.engine.check_reachable: it answers, and a table of candleflow's names is candleflow's)."""
    form = read_form(BackfillForm, values, name)
    checked = _run(form, name)
    checked.check_dates(form.start, form.end)
    check_reachable(checked.warehouse_url)
    return BackfillInputs(**_common(checked), start=form.start, end=form.end, mode=form.mode, dry_run=form.dry_run)


def check_update(*, name: NameStyle = param_name, **values: Any) -> UpdateInputs:
    """Check an incremental update's inputs."""
    form = read_form(UpdateForm, values, name)
    checked = _recent(form, name)
    return UpdateInputs(
        **_common(checked), end=form.end, lookback_days=form.lookback_days, overlap_days=form.overlap_days
    )


def check_repair(*, name: NameStyle = param_name, **values: Any) -> RepairInputs:
    """Check a gap repair's inputs."""
    form = read_form(RepairForm, values, name)
    checked = _recent(form, name)
    return RepairInputs(**_common(checked), end=form.end, lookback_days=form.lookback_days, dry_run=form.dry_run)


def _recent(form: UpdateForm | RepairForm, name: NameStyle) -> RunInputs:
    """What an update and a repair check alike after their forms: the run, its end's calendars, the warehouse."""
    checked = _run(form, name)
    if form.end is not None:
        checked.check_dates(form.end, form.end)
    check_reachable(checked.warehouse_url)
    return checked
