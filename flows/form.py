"""What a run takes, as the Prefect UI's run form shows it and as it is checked.

Each flow's inputs are one pydantic model (BackfillForm, UpdateForm, RepairForm), read the same way from every
caller: the command line, the UI's form, a deployment's parameters (JSON, so dates and numbers may come as text),
Python. `read_form` turns the first validation error, in field order, into one BadInputError line that names the
input in the caller's own words (`overlap_days` or `--overlap-days`) and says what to give instead: each field
type carries its message (`Says`), and a rule of the vocabulary (a symbol, a date, a mode) already names its input.
The flows do not let Prefect validate their parameters: its message spans many lines and names no fix.

What depends on this machine (the provider and its keys, the calendars, the warehouse answering) is checked after
the form, in flows/inputs.py. Nothing here imports Prefect: the command line refuses bad input without starting it.

The `Optional*` types are how the UI form should show an optional parameter: one plain input, left empty for none.
Declared as `float | None`, a parameter's JSON schema is `anyOf: [number, null]`, which the form draws as a
`float | None` switch with "Property is type None" under it. These keep `None` as the Python default and give the
form only the value's own type; the deployments do not enforce the schema, so an API caller may still send null.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    Strict,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
)
from pydantic_core import PydanticCustomError

from candleflow.errors import BadInputError
from candleflow.freshness import DEFAULT_MAX_LAG
from candleflow.inputs import UPPER_CASE, check_date_range, parse_date, parse_symbols
from candleflow.model import OnInvalid
from candleflow.planning import PlanMode, parse_mode
from candleflow.timeframes import Timeframe, get_timeframe
from candleflow.universes import (
    UNIVERSE_KINDS,
    ReferenceQuery,
    UniverseKind,
    check_universe_name,
    universe_entries,
)
from providers import PROVIDERS, check_provider_name
from warehouse.engine import PASSWORD_ENV, URL_ENV, has_password, parse_url, resolve_url

OptionalAmount = Annotated[float | None, Field(ge=0), WithJsonSchema({"type": "number", "minimum": 0})]
OptionalCount = Annotated[int | None, Field(ge=0), WithJsonSchema({"type": "integer", "minimum": 0})]
OptionalText = Annotated[str | None, WithJsonSchema({"type": "string"})]
OptionalDate = Annotated[dt.date | None, WithJsonSchema({"type": "string", "format": "date"})]

NameStyle = Callable[[str], str]


def param_name(name: str) -> str:
    """How a flow names its input: the parameter, `overlap_days`."""
    return name


def flag_name(name: str) -> str:
    """How the command line names an input: the option, `--overlap-days`."""
    return "--" + name.replace("_", "-")


@dataclass(frozen=True)
class Says:
    """How a wrong value of a field is refused: `message`, or the one named after the pydantic error's type.
    Templates of {name} (the input as the caller names it), {input} (the value given) and the error's context.
    An empty message: the field's rule raises a BadInputError of its own, which names the input."""

    message: str
    by_type: Mapping[str, str] = field(default_factory=dict)


DAYS_AHEAD = 7  # how far past today (UTC) an end date may reach: the rest of this week's sessions, no further
_FAR_AHEAD = (
    "{name} {date} is more than {days} days after today ({today}): no bars exist yet; end at {today} or earlier "
    "(sessions that have not closed are fetched again by later runs)"
)


def not_far_ahead(date: dt.date) -> dt.date:
    today = dt.datetime.now(dt.UTC).date()
    if date > today + dt.timedelta(days=DAYS_AHEAD):
        raise PydanticCustomError("far_ahead", "too far ahead", {"date": date, "days": DAYS_AHEAD, "today": today})
    return date


def _a_number(value: object) -> object:
    """True is not 1 and b"5" is not 5 here: only numbers and text reach pydantic's number parsing."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise PydanticCustomError("number_type", "not a number")
    return value


def _at_least(minimum: int) -> Callable[[int], int]:
    """The bound of a whole number, refused with the number read (0 for "0", 0.0 or "-0")."""

    def check(number: int) -> int:
        if number < minimum:
            raise PydanticCustomError("below_minimum", "too small", {"number": number, "minimum": minimum})
        return number

    return check


def _a_whole_number(value: object) -> object:
    """As _a_number; text must be a whole number as Python writes one ("30", not "30.0", as the command line
    always took it)."""
    if isinstance(_a_number(value), str):
        try:
            return int(value)  # type: ignore[call-overload]
        except ValueError:
            raise PydanticCustomError("int_parsing", "not a whole number") from None
    return value


def _none_or_whole_number(value: object) -> object:
    return value if value is None else _a_whole_number(value)


def _empty_is_none(value: object) -> object:
    """A form field left (or made) empty means no value."""
    return None if value is None or (isinstance(value, str) and not value.strip()) else _a_number(value)


def _true_or_false(value: object) -> object:
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    return value


def _symbol_list(value: object, info: ValidationInfo) -> list[str]:
    """Tickers by the provider's rule (case kept for vendors whose tickers are case-sensitive), and `@FILE` and
    `universe:NAME` entries kept for the run to resolve (flows/inputs.py)."""
    if not isinstance(value, str | list | tuple):
        raise PydanticCustomError("list_type", "not a list")
    provider = PROVIDERS.get(str(info.data.get("provider")))
    rule = provider.capabilities.symbol_rule if provider is not None else UPPER_CASE
    entries = value.split(",") if isinstance(value, str) else [str(v) for v in value]
    return parse_symbols(universe_entries(str(info.data.get("universe", "tickers")), entries), rule, references=True)


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


def _optional_end(value: object) -> dt.date | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return not_far_ahead(parse_date(value, "end"))  # type: ignore[arg-type]


_WHOLE = "{name} {input!r} is not a whole number: give one of %d or more"
_DATE = Says("", {"far_ahead": _FAR_AHEAD})  # a date's own rule (candleflow.inputs.parse_date) names it

AtLeastOne = Annotated[
    int,
    BeforeValidator(_a_whole_number),
    AfterValidator(_at_least(1)),
    Says(_WHOLE % 1, {"below_minimum": "{name} {number} must be at least 1"}),
]
ZeroOrMore = Annotated[
    Annotated[int, AfterValidator(_at_least(0))] | None,
    BeforeValidator(_none_or_whole_number),
    Says(_WHOLE % 0, {"below_minimum": "{name} {number} must be 0 or more"}),
]
Flag = Annotated[bool, BeforeValidator(_true_or_false), Strict(), Says("{name} {input!r} must be true or false")]
CostLimit = Annotated[
    Annotated[float, Field(ge=0)] | None,
    BeforeValidator(_empty_is_none),
    Says("{name} {input!r} must be 0 or more (US dollars), or empty for no limit"),
]
Text = Annotated[str, Strict()]  # text only: not bytes, which pydantic would decode
SessionDate = Annotated[dt.date, PlainValidator(lambda value, info: parse_date(value, info.field_name)), _DATE]
EndDate = Annotated[dt.date | None, PlainValidator(_optional_end), _DATE]


def _url_without_password(url: str | None) -> str | None:
    parse_url(resolve_url(url or None))  # a malformed or unsupported URL, before anything runs
    if url and has_password(url):
        raise PydanticCustomError("password_in_url", "a password in the URL")
    return url or None


WarehouseUrl = Annotated[
    Text | None,
    AfterValidator(_url_without_password),
    Says(
        "{name} must be a SQLAlchemy URL, e.g. sqlite:///candleflow.db",
        {
            "password_in_url": "{name} holds a password, which Prefect keeps in plain text with the run's "
            f"parameters: leave it out of the URL and set {PASSWORD_ENV} (or {URL_ENV} with the password) "
            "where the run runs"
        },
    ),
]


class RunForm(BaseModel):
    """What every run takes, each input checked on its own, in this order."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    provider: Annotated[str, PlainValidator(check_provider_name), Says("")]
    universe: Annotated[UniverseKind, Says(f"unknown {{name}} {{input!r}}: use one of {', '.join(UNIVERSE_KINDS)}")] = (
        "tickers"
    )
    symbols: Annotated[
        list[str],
        PlainValidator(_symbol_list),
        Says('{name} must be a list of symbols, e.g. ["AAPL", "MSFT"], "@universe.txt", "universe:NAME" or "ALL"'),
    ] = Field(default_factory=list, validate_default=True)
    timeframes: Annotated[list[Timeframe], PlainValidator(_timeframes), Says("")]
    provider_options: Annotated[
        dict[str, Any] | None, Says('{name} must map option names to values, e.g. {{"seed": 7}}')
    ] = None
    on_invalid: Annotated[OnInvalid, Says("unknown {name} {input!r}: use reject or quarantine_rows")] = "reject"
    max_cost_usd: CostLimit = None
    warehouse_url: WarehouseUrl = None
    calendar: Annotated[
        Text | None,
        BeforeValidator(lambda value: value or None),
        Says("{name} must be a calendar name such as XNYS, XLON or CME_Equity"),
    ] = None


class BackfillForm(RunForm):
    start: SessionDate
    end: SessionDate
    mode: Annotated[PlanMode, PlainValidator(parse_mode), Says("")] = PlanMode.MISSING
    dry_run: Flag = False

    @field_validator("end")
    @classmethod
    def _after_start_not_far_ahead(cls, end: dt.date, info: ValidationInfo) -> dt.date:
        if "start" in info.data:
            check_date_range(info.data["start"], end)
        return not_far_ahead(end)


class UpdateForm(RunForm):
    end: EndDate = None
    lookback_days: AtLeastOne = 30
    overlap_days: ZeroOrMore = None


class FreshnessForm(RunForm):
    max_lag_sessions: Annotated[
        int,
        BeforeValidator(_a_whole_number),
        AfterValidator(_at_least(0)),
        Says(_WHOLE % 0, {"below_minimum": "{name} {number} must be 0 or more"}),
    ] = DEFAULT_MAX_LAG
    ask_vendor: Flag = True


class RepairForm(RunForm):
    end: EndDate = None
    lookback_days: AtLeastOne = 30
    dry_run: Flag = False


FormT = TypeVar("FormT", bound=BaseModel)


def read_form(form: type[FormT], values: Mapping[str, Any], name: NameStyle = param_name) -> FormT:
    """The inputs checked by `form`; raises BadInputError of one line about the first bad one."""
    try:
        return form.model_validate(values)
    except ValidationError as exc:
        raise refusal(exc, form, name) from None


def refusal(error: ValidationError, form: type[BaseModel], name: NameStyle) -> BadInputError | ValidationError:
    """The one-line BadInputError for the first error of `error`. An error no field's `Says` words (a missing or
    unknown argument: a caller's bug, not a user's input) is returned as it is."""
    first = error.errors(include_url=False)[0]
    context = dict(first.get("ctx") or {})
    cause = context.get("error")
    if isinstance(cause, BadInputError):  # a rule of the vocabulary: its message already names the input
        return cause
    field_name = str(first["loc"][0]) if first["loc"] else ""
    info = form.model_fields.get(field_name)
    says = next((m for m in info.metadata if isinstance(m, Says)), None) if info else None
    template = (says.by_type.get(first["type"]) or says.message) if says else ""
    if not template or first["type"] in ("missing", "extra_forbidden"):
        return error
    return BadInputError(template.format(name=name(field_name), input=first["input"], **context))


class RefreshForm(BaseModel):
    """What a universe refresh takes: the universe's name, the provider listing it and the reference filters."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: Annotated[str, PlainValidator(lambda value: check_universe_name(str(value))), Says("")]
    provider: Annotated[str, PlainValidator(check_provider_name), Says("")]
    market: Annotated[str, Says("")] = "stocks"
    ticker_type: Annotated[Text | None, BeforeValidator(lambda value: value or None), Says("")] = None
    exchange: Annotated[Text | None, BeforeValidator(lambda value: value or None), Says("")] = None
    include_inactive: Flag = False
    parents: Annotated[list[Text], Says('{name} must be a list of futures parents, e.g. ["ES.FUT"]')] = Field(
        default_factory=list
    )
    underlyings: Annotated[list[Text], Says('{name} must be a list of stock tickers, e.g. ["AAPL"]')] = Field(
        default_factory=list
    )
    provider_options: Annotated[
        dict[str, Any] | None, Says('{name} must map option names to values, e.g. {{"seed": 7}}')
    ] = None
    warehouse_url: WarehouseUrl = None

    def query(self) -> ReferenceQuery:
        """The reference filters, checked (BadInputError naming a bad one)."""
        return ReferenceQuery(
            self.market,
            self.ticker_type,
            self.exchange,
            not self.include_inactive,
            tuple(dict.fromkeys(p.strip() for p in self.parents if p.strip())),
            tuple(dict.fromkeys(u.strip() for u in self.underlyings if u.strip())),
        ).check()
