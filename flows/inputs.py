"""One input contract for every way a run starts: the command line, the Prefect UI's run form, a deployment's
parameters, Python. Each flow checks its own inputs with these functions before it fetches anything, and the
command line calls the same functions first, so a bad input is refused the same way everywhere: a
BadInputError of one line naming the input and the fix (exit 2 on the command line, a Failed run elsewhere).

The values may arrive as Python objects or as JSON from the Prefect API (dates as "YYYY-MM-DD", numbers as
numbers or text): the flows do not let Prefect validate their parameters, because its message spans many lines
and names no fix. Nothing here imports Prefect, so the command line refuses bad input without starting it.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, get_args

from candleflow.errors import BadInputError
from candleflow.inputs import check_date_range, parse_date, parse_symbols
from candleflow.model import OnInvalid
from candleflow.planning import PlanMode, parse_mode
from candleflow.sessions import DEFAULT_CALENDAR, check_in_range, get_calendar
from candleflow.settings import oracle_settings, run_settings
from candleflow.timeframes import Timeframe, get_timeframe
from providers import check_provider_name, get_provider
from providers.base import Provider
from warehouse.engine import PASSWORD_ENV, URL_ENV, check_reachable, has_password, parse_url, resolve_url

NameStyle = Callable[[str], str]


def param_name(name: str) -> str:
    """How a flow names its input: the parameter, `overlap_days`."""
    return name


def flag_name(name: str) -> str:
    """How the command line names an input: the option, `--overlap-days`."""
    return "--" + name.replace("_", "-")


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


def _integer(value: object, name: str, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str | float):
        raise BadInputError(f"{name} {value!r} is not a whole number: give one of {minimum} or more")
    try:
        number = int(value) if not isinstance(value, float) or value.is_integer() else None
    except ValueError:
        number = None
    if number is None:
        raise BadInputError(f"{name} {value!r} is not a whole number: give one of {minimum} or more")
    if number < minimum:
        raise BadInputError(f"{name} {number} must be {'at least 1' if minimum == 1 else f'{minimum} or more'}")
    return number


def _cost_limit(value: object, name: str) -> float | None:
    if value is None or (isinstance(value, str) and not value.strip()):  # a form field left (or made) empty
        return None
    try:
        number = float(value) if isinstance(value, int | float | str) and not isinstance(value, bool) else math.nan
    except ValueError:
        number = math.nan
    if math.isnan(number) or number < 0:
        raise BadInputError(f"{name} {value!r} must be 0 or more (US dollars), or empty for no limit")
    return number


def _flag(value: object, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise BadInputError(f"{name} {value!r} must be true or false")


def _timeframes(value: object) -> list[Timeframe]:
    names = value.split(",") if isinstance(value, str) else value
    if not isinstance(names, Iterable):
        raise BadInputError(f'timeframes {value!r} are not a list: use e.g. ["1d", "1h"]')
    checked: list[Timeframe] = []
    for item in names:
        if isinstance(item, str) and not item.strip():
            continue
        timeframe = get_timeframe(str(item))
        if timeframe not in checked:
            checked.append(timeframe)
    if not checked:
        raise BadInputError("no timeframe given: use one or more of 1m, 5m, 15m, 1h, 1d")
    return checked


DAYS_AHEAD = 7  # how far past today (UTC) an end date may reach: the rest of this week's sessions, no further


def _not_far_ahead(date: dt.date, name: str) -> dt.date:
    today = dt.datetime.now(dt.UTC).date()
    if date > today + dt.timedelta(days=DAYS_AHEAD):
        raise BadInputError(
            f"{name} {date} is more than {DAYS_AHEAD} days after today ({today}): no bars exist yet; end at "
            f"{today} or earlier (sessions that have not closed are fetched again by later runs)"
        )
    return date


def _checked_end(value: object, run: RunInputs, name: NameStyle) -> dt.date | None:
    """An optional last session date: not far ahead, and known to every calendar of the run."""
    last = _end_date(value)
    if last is not None:
        _not_far_ahead(last, name("end"))
        run.check_dates(last, last)
    return last


def _end_date(value: object) -> dt.date | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return parse_date(value, "end")  # type: ignore[arg-type]


def check_run(
    *,
    provider: object,
    symbols: object,
    timeframes: object,
    provider_options: object = None,
    on_invalid: object = "reject",
    max_cost_usd: object = None,
    warehouse_url: object = None,
    calendar: object = None,
    name: NameStyle = param_name,
) -> RunInputs:
    """Check what every run needs; raises BadInputError naming the first bad input."""
    provider_name = check_provider_name(provider)  # type: ignore[arg-type]
    if not isinstance(symbols, str | list | tuple):
        raise BadInputError(f'{name("symbols")} must be a list of symbols, e.g. ["AAPL", "MSFT"]')
    checked_symbols = parse_symbols(symbols)
    checked_timeframes = _timeframes(timeframes)
    if provider_options is not None and not isinstance(provider_options, Mapping):
        raise BadInputError(f'{name("provider_options")} must map option names to values, e.g. {{"seed": 7}}')
    options = dict(provider_options or {})
    source = get_provider(provider_name, options)  # the provider's own options model rejects bad options
    settings = run_settings()  # CANDLEFLOW_RETRIES=abc and the like: one line naming the variable
    source.check_keys()
    source.check_inputs(checked_symbols, checked_timeframes)  # options that depend on this machine: a directory
    if on_invalid not in get_args(OnInvalid):
        raise BadInputError(f"unknown {name('on_invalid')} {on_invalid!r}: use reject or quarantine_rows")
    if warehouse_url is not None and not isinstance(warehouse_url, str):
        raise BadInputError(f"{name('warehouse_url')} must be a SQLAlchemy URL, e.g. sqlite:///candleflow.db")
    url = parse_url(resolve_url(warehouse_url or None))  # a malformed or unsupported URL, before anything runs
    if warehouse_url and has_password(warehouse_url):
        raise BadInputError(
            f"{name('warehouse_url')} holds a password, which Prefect keeps in plain text with the run's parameters: "
            f"leave it out of the URL and set {PASSWORD_ENV} (or {URL_ENV} with the password) where the run runs"
        )
    calendars = symbol_calendars(calendar or options.get("calendar"), checked_symbols, settings.calendars, name)
    if url.get_backend_name() == "oracle":
        oracle_settings()
    return RunInputs(
        provider=provider_name,
        symbols=checked_symbols,
        timeframes=checked_timeframes,
        provider_options=options,
        source=source,
        calendar=Counter(calendars.values()).most_common(1)[0][0],
        calendars=calendars,
        on_invalid=on_invalid,  # type: ignore[arg-type]
        max_cost_usd=_cost_limit(max_cost_usd, name("max_cost_usd")),
        warehouse_url=warehouse_url or None,
        stored_as=source.stored_as,
    )


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


def check_backfill(
    *, start: object, end: object, mode: object = "missing", dry_run: object = False, **run: Any
) -> BackfillInputs:
    """Check a backfill's inputs (one timeframe, inclusive session dates start..end), the warehouse last (see
    warehouse.engine.check_reachable: it answers, and a table of candleflow's names is candleflow's)."""
    checked = check_run(**run)
    name: NameStyle = run.get("name", param_name)
    first, last = parse_date(start, "start"), parse_date(end, "end")  # type: ignore[arg-type]
    check_date_range(first, last)
    _not_far_ahead(last, name("end"))
    checked.check_dates(first, last)
    plan_mode, dry = parse_mode(mode), _flag(dry_run, name("dry_run"))  # type: ignore[arg-type]
    check_reachable(checked.warehouse_url)
    return BackfillInputs(
        **_common(checked),
        start=first,
        end=last,
        mode=plan_mode,
        dry_run=dry,
    )


def _recent(run: dict[str, Any], end: object, lookback_days: object) -> tuple[RunInputs, NameStyle, dict[str, Any]]:
    """What an update and a repair check alike, in this order: the run, its end, its lookback. Returns the run,
    its naming style and the fields both inputs records take."""
    checked = check_run(**run)
    name: NameStyle = run.get("name", param_name)
    last = _checked_end(end, checked, name)
    lookback = _integer(lookback_days, name("lookback_days"), minimum=1)
    return checked, name, {**_common(checked), "end": last, "lookback_days": lookback}


def check_update(
    *, lookback_days: object = 30, overlap_days: object = None, end: object = None, **run: Any
) -> UpdateInputs:
    """Check an incremental update's inputs."""
    checked, name, fields = _recent(run, end, lookback_days)
    overlap = None if overlap_days is None else _integer(overlap_days, name("overlap_days"), minimum=0)
    check_reachable(checked.warehouse_url)
    return UpdateInputs(**fields, overlap_days=overlap)


def check_repair(
    *, lookback_days: object = 30, end: object = None, dry_run: object = False, **run: Any
) -> RepairInputs:
    """Check a gap repair's inputs."""
    checked, name, fields = _recent(run, end, lookback_days)
    dry = _flag(dry_run, name("dry_run"))
    check_reachable(checked.warehouse_url)
    return RepairInputs(**fields, dry_run=dry)
