"""One input contract (flows/inputs.py) for the command line, the UI form, the API and Python: each bad input is
refused in one line that names it, in the caller's own words (`--overlap-days` or `overlap_days`)."""

import datetime as dt

import pytest
from pydantic import ValidationError

from candleflow.errors import BadInputError
from candleflow.planning import PlanMode
from flows.form import RepairForm, UpdateForm, flag_name, param_name, read_form
from flows.inputs import check_backfill, check_repair, check_run, check_update

RUN = {"provider": "synthetic", "symbols": ["AAPL"], "timeframes": ["1d"]}


def test_json_values_from_the_api_are_read_like_python_ones() -> None:
    from_api = check_backfill(
        **RUN, start="2024-01-02", end="2024-01-31", mode="all", dry_run="true", max_cost_usd="2.5"
    )
    from_python = check_backfill(**RUN, start=dt.date(2024, 1, 2), end=dt.date(2024, 1, 31), mode="all", dry_run=True)
    assert (from_api.start, from_api.end, from_api.mode, from_api.dry_run) == (
        from_python.start,
        from_python.end,
        PlanMode.ALL,
        True,
    )
    assert from_api.max_cost_usd == 2.5 and from_python.max_cost_usd is None
    assert check_update(**RUN, lookback_days="10", overlap_days=0.0).lookback_days == 10


def test_symbols_and_timeframes_may_be_lists_or_comma_text() -> None:
    checked = check_run(provider="synthetic", symbols="aapl, msft,AAPL", timeframes="1d,1h,1d")
    assert checked.symbols == ["AAPL", "MSFT"] and [tf.name for tf in checked.timeframes] == ["1d", "1h"]


BAD = [
    (check_run, {"provider": "yahoo"}, "unknown provider 'yahoo': use one of csv, databento, polygon"),
    (check_run, {"provider": None}, "unknown provider None"),
    (check_run, {"symbols": []}, "no symbols given"),
    (check_run, {"symbols": 42}, "{} must be a list of symbols"),
    (check_run, {"timeframes": ["2h"]}, "unknown timeframe '2h': use one of 1m, 5m, 15m, 1h, 1d"),
    (check_run, {"timeframes": []}, "no timeframe given"),
    (check_run, {"provider_options": "seed=7"}, "{} must map option names to values"),
    (check_run, {"provider_options": {"seeed": 7}}, "bad option for provider 'synthetic': seeed"),
    (check_run, {"on_invalid": "drop"}, "unknown {} 'drop': use reject or quarantine_rows"),
    (check_run, {"max_cost_usd": -1}, "{} -1 must be 0 or more"),
    (check_run, {"max_cost_usd": "lots"}, "{} 'lots' must be 0 or more"),
    (check_run, {"warehouse_url": "mysql://u:secret@h/db"}, "'mysql' is not supported"),
    (check_run, {"warehouse_url": 5}, "{} must be a SQLAlchemy URL"),
    (check_backfill, {"start": "2024-02-01", "end": "2024-01-01"}, "end date 2024-01-01 is before start date"),
    (check_backfill, {"start": "2024-13-01", "end": "2024-12-31"}, "start date '2024-13-01' is not a date"),
    (check_backfill, {"start": "1980-01-02", "end": "2024-12-31"}, "start date 1980-01-02 is before"),
    (check_backfill, {"start": "2024-01-01", "end": "2024-12-31", "mode": "some"}, "unknown mode 'some'"),
    (check_backfill, {"start": "2024-01-01", "end": "2024-12-31", "dry_run": "maybe"}, "{} 'maybe' must be"),
    (check_update, {"lookback_days": 0}, "{} 0 must be at least 1"),
    (check_update, {"lookback_days": "ten"}, "{} 'ten' is not a whole number"),
    (check_update, {"overlap_days": -1}, "{} -1 must be 0 or more"),
    (check_update, {"overlap_days": 1.5}, "{} 1.5 is not a whole number"),
    (check_update, {"end": "2099-01-01"}, "2099-01-01 is more than 7 days after today"),
    (check_backfill, {"start": "2024-01-01", "end": "2099-01-01"}, "2099-01-01 is more than 7 days after today"),
    (check_repair, {"end": "2099-01-01"}, "2099-01-01 is more than 7 days after today"),
    (check_repair, {"lookback_days": -3}, "{} -3 must be at least 1"),
    (check_repair, {"lookback_days": 0.0}, "{} 0 must be at least 1"),
    (check_update, {"lookback_days": True}, "{} True is not a whole number"),
    (check_update, {"lookback_days": "30.0"}, "{} '30.0' is not a whole number"),
    (check_update, {"overlap_days": b"5"}, "{} b'5' is not a whole number: give one of 0 or more"),
    (check_repair, {"dry_run": "yes"}, "{} 'yes' must be true or false"),
    (check_repair, {"dry_run": 1}, "{} 1 must be true or false"),
    (check_run, {"max_cost_usd": float("nan")}, "{} nan must be 0 or more"),
    (check_run, {"max_cost_usd": True}, "{} True must be 0 or more"),
    (check_run, {"calendar": b"XNYS"}, "{} must be a calendar name"),
    (check_run, {"warehouse_url": "postgresql://u:secret@h/db"}, "{} holds a password"),
]


@pytest.mark.parametrize(("check", "changes", "message"), BAD, ids=[m[:40] for *_, m in BAD])
@pytest.mark.parametrize("style", [param_name, flag_name], ids=["flow", "cli"])
def test_each_bad_input_is_one_line_naming_it(check, changes, message, style) -> None:  # type: ignore[no-untyped-def]
    args = {**RUN, **changes, "name": style}
    if check is check_backfill:
        args = {"start": "2024-01-01", "end": "2024-01-31", **args}
    input_name = next((k for k in changes if k not in ("start", "end")), "")
    expected = message.replace("{}", style(input_name))
    with pytest.raises(BadInputError) as info:
        check(**args)
    assert expected in str(info.value) and len(str(info.value).splitlines()) == 1
    assert "secret" not in str(info.value)


def test_an_input_s_own_rule_is_reported_before_what_depends_on_the_machine() -> None:
    """Two wrong inputs: the form's rules (flows/form.py) come first, then the provider's options and keys, the
    calendars and the warehouse (flows/inputs.py), so the first message does not depend on this machine."""
    with pytest.raises(BadInputError, match="--lookback-days 0 must be at least 1"):
        check_update(**RUN, provider_options={"seeed": 7}, lookback_days=0, name=flag_name)
    with pytest.raises(BadInputError, match="bad option for provider 'synthetic': seeed"):
        check_update(**RUN, provider_options={"seeed": 7}, calendar="NOPE", name=flag_name)


def test_an_argument_the_form_does_not_know_is_a_caller_s_bug_not_bad_input() -> None:
    with pytest.raises(ValidationError) as info:
        check_run(**RUN, lookback=3)
    assert not isinstance(info.value, BadInputError) and "lookback" in str(info.value)
    with pytest.raises(ValidationError, match="provider"):
        check_run(symbols=["AAPL"], timeframes=["1d"])
    # symbols may be left out (a form's universe ALL takes none), and then they are a user's input
    with pytest.raises(BadInputError, match="no symbols given"):
        check_run(provider="synthetic", timeframes=["1d"])


@pytest.mark.parametrize(
    ("value", "read"), [("0", 0), (" 7 ", 7), (3.0, 3), ("1_000", 1000), (None, None), (0, 0)], ids=repr
)
def test_a_whole_number_is_read_from_numbers_and_text(value: object, read: object) -> None:
    assert read_form(UpdateForm, {**RUN, "overlap_days": value}).overlap_days == read


@pytest.mark.parametrize(("value", "read"), [(" TRUE ", True), ("false", False), (False, False)], ids=repr)
def test_a_flag_is_read_from_booleans_and_their_words(value: object, read: bool) -> None:
    assert read_form(RepairForm, {**RUN, "dry_run": value}).dry_run is read
