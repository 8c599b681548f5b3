import datetime as dt
import itertools

import numpy as np
import pandas as pd
import pytest

from candleflow.errors import BadInputError
from candleflow.model import BAR_COLUMNS
from candleflow.sessions import schedule
from candleflow.timeframes import get_timeframe
from providers import PROVIDERS, get_provider
from providers.base import FetchRequest
from providers.errors import TerminalProviderError, TransientProviderError
from providers.synthetic import SyntheticProvider


def fetch(symbol: str, tf: str, start: str, end: str, **options: object) -> pd.DataFrame:
    provider = get_provider("synthetic", options)
    request = FetchRequest((symbol,), get_timeframe(tf), pd.Timestamp(start, tz="UTC"), pd.Timestamp(end, tz="UTC"))
    return provider.fetch(request).bars


@pytest.mark.parametrize(
    ("tf", "whole", "cuts"),
    [
        ("1d", ("2023-01-01", "2025-01-01"), ["2023-01-01", "2023-07-19", "2024-01-01", "2025-01-01"]),
        ("1m", ("2024-02-26", "2024-03-06"), ["2024-02-26", "2024-03-01", "2024-03-04", "2024-03-06"]),
        ("1h", ("2024-03-01", "2024-05-01"), ["2024-03-01", "2024-04-01", "2024-05-01"]),
    ],
)
def test_same_bars_whichever_chunking(tf: str, whole: tuple[str, str], cuts: list[str]) -> None:
    one = fetch("AAPL", tf, *whole)
    parts = pd.concat([fetch("AAPL", tf, a, b) for a, b in itertools.pairwise(cuts)], ignore_index=True)
    pd.testing.assert_frame_equal(one, parts)
    assert len(one) > 0


def test_canonical_schema_sorted_and_unique() -> None:
    frame = fetch("MSFT", "15m", "2024-03-01", "2024-03-08")
    assert tuple(frame.columns) == BAR_COLUMNS
    assert str(frame["ts"].dtype) == "datetime64[us, UTC]"
    assert frame["ts"].is_monotonic_increasing and frame["ts"].is_unique
    assert str(frame["trades"].dtype) == "Int64"
    assert set(frame["provider"]) == {"synthetic"} and set(frame["timeframe"]) == {"15m"}


def test_seed_and_symbol_change_the_bars() -> None:
    base = fetch("AAPL", "1d", "2024-01-01", "2024-02-01")
    assert not base["close"].equals(fetch("AAPL", "1d", "2024-01-01", "2024-02-01", seed=1)["close"])
    assert not base["close"].equals(fetch("MSFT", "1d", "2024-01-01", "2024-02-01")["close"])


def test_bars_only_in_sessions_and_regular_hours_including_early_closes() -> None:
    frame = fetch("SPY", "1m", "2024-11-25", "2024-12-03")
    sched = schedule(dt.date(2024, 11, 25), dt.date(2024, 12, 2))
    days = frame["ts"].dt.normalize()
    assert set(days.dt.date) == {d.date() for d in sched.index}  # Thanksgiving 11-28 and the weekend absent
    for session, row in sched.iterrows():
        bars = frame[days.dt.date == session.date()]
        assert bars["ts"].min() == row["open"]
        assert bars["ts"].max() == row["close"] - pd.Timedelta(minutes=1)
        assert len(bars) == (row["close"] - row["open"]) // pd.Timedelta(minutes=1)
    assert len(frame[days.dt.date == dt.date(2024, 11, 29)]) == 210  # closes at 13:00 New York


def test_timeframes_agree_hourly_and_daily_bars_are_aggregates_of_minutes() -> None:
    minutes = fetch("NVDA", "1m", "2024-07-01", "2024-07-06")
    hours = fetch("NVDA", "1h", "2024-07-01", "2024-07-06")
    days = fetch("NVDA", "1d", "2024-07-01", "2024-07-06")
    by_hour = minutes.groupby(minutes["ts"].dt.floor("1h"))
    assert np.allclose(by_hour["high"].max().to_numpy(), hours["high"].to_numpy())
    assert np.allclose(by_hour["volume"].sum().to_numpy(), hours["volume"].to_numpy())
    by_day = minutes.groupby(minutes["ts"].dt.normalize())
    assert np.allclose(by_day["open"].first().to_numpy(), days["open"].to_numpy())
    assert np.allclose(by_day["close"].last().to_numpy(), days["close"].to_numpy())
    assert np.allclose(by_day["low"].min().to_numpy(), days["low"].to_numpy())
    assert np.array_equal(by_day["high"].max().to_numpy(), days["high"].to_numpy())  # exactly, not nearly
    assert np.array_equal(by_day["volume"].sum().to_numpy(), days["volume"].to_numpy())
    assert np.array_equal(by_day["trades"].sum().to_numpy(), days["trades"].to_numpy())
    assert (minutes["volume"] >= 1).all() and (minutes["trades"] >= 1).all()
    assert (days["ts"] == days["ts"].dt.normalize()).all()  # session-dated at 00:00 UTC


def test_ohlc_is_valid_and_plausible() -> None:
    frame = fetch("XOM", "1d", "2020-01-01", "2025-01-01")
    assert (frame["high"] >= frame[["open", "close", "low"]].max(axis=1)).all()
    assert (frame["low"] <= frame[["open", "close"]].min(axis=1)).all()
    assert (frame[["open", "high", "low", "close"]] > 0).all().all()
    returns = np.log(frame["close"]).diff().dropna()
    assert 0.005 < returns.std() < 0.05


def test_only_bars_closed_by_now_exist() -> None:
    now = "2024-07-03T15:00:00Z"
    minutes = fetch("AAPL", "1m", "2024-07-01", "2024-07-10", now=now)
    assert minutes["ts"].max() == pd.Timestamp("2024-07-03 14:59", tz="UTC")
    hours = fetch("AAPL", "1h", "2024-07-01", "2024-07-10", now=now)
    assert hours["ts"].max() == pd.Timestamp("2024-07-03 14:00", tz="UTC")
    days = fetch("AAPL", "1d", "2024-07-01", "2024-07-10", now=now)
    assert days["ts"].max() == pd.Timestamp("2024-07-02", tz="UTC")  # the 3rd has not closed yet


def test_injected_transient_failures_then_success() -> None:
    provider = SyntheticProvider(transient_failure_rate=1.0, transient_failures_per_request=2, seed=99)
    request = FetchRequest(
        ("IBM",),
        get_timeframe("1d"),
        pd.Timestamp("2021-01-01", tz="UTC"),
        pd.Timestamp("2022-01-01", tz="UTC"),
    )
    for attempt in (1, 2):
        with pytest.raises(TransientProviderError, match=f"injected transient failure {attempt} of 2") as info:
            provider.fetch(request)
        assert info.value.http_status == 503 and info.value.symbols == ("IBM",)
    clean = SyntheticProvider(seed=99).fetch(request).bars
    pd.testing.assert_frame_equal(provider.fetch(request).bars, clean)


def test_unknown_symbol_is_terminal() -> None:
    with pytest.raises(TerminalProviderError, match="unknown symbol ZZZZ"):
        fetch("ZZZZ", "1d", "2024-01-01", "2024-02-01", unknown_symbols=["ZZZZ"])


@pytest.mark.parametrize("kind", ["high_below_low", "negative_price", "null_close", "duplicate_ts", "off_grid"])
def test_invalid_bars_knob_changes_exactly_one_bar(kind: str) -> None:
    clean = fetch("AAPL", "1h", "2024-01-01", "2024-02-01")
    dirty = fetch("AAPL", "1h", "2024-01-01", "2024-02-01", invalid_chunk_rate=1.0, invalid_kind=kind)
    if kind == "duplicate_ts":
        assert len(dirty) == len(clean) + 1 and dirty.duplicated(["symbol", "ts"]).sum() == 1
    else:
        differing = (dirty.fillna(-1).to_numpy() != clean.fillna(-1).to_numpy()).any(axis=1)
        assert differing.sum() == 1


def test_bad_options_are_rejected_with_their_name() -> None:
    with pytest.raises(BadInputError, match="transient_failure_rate"):
        get_provider("synthetic", {"transient_failure_rate": 3})
    with pytest.raises(BadInputError, match="colour"):
        get_provider("synthetic", {"colour": "red"})
    with pytest.raises(BadInputError, match=f"unknown provider 'yahoo': use one of {', '.join(sorted(PROVIDERS))}"):
        get_provider("yahoo")


def test_a_simulated_latency_holds_each_request_and_spreads_a_run_like_a_vendor_s(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import time

    from candleflow.settings import run_settings
    from flows.chunks import spread_over
    from providers.synthetic import SyntheticProvider

    request = FetchRequest(
        ("AAPL",), get_timeframe("1d"), pd.Timestamp("2024-01-02", tz="UTC"), pd.Timestamp("2024-02-01", tz="UTC")
    )
    monkeypatch.setenv("CANDLEFLOW_SYNTHETIC_LATENCY_MS", "150")  # as a worker's environment sets it
    slow = get_provider("synthetic")
    started = time.monotonic()
    bars = slow.fetch(request).bars
    assert time.monotonic() - started >= 0.15
    monkeypatch.delenv("CANDLEFLOW_SYNTHETIC_LATENCY_MS")
    quick = get_provider("synthetic")
    assert bars.equals(quick.fetch(request).bars)  # the same bars, later
    assert slow.capabilities.remote and not quick.capabilities.remote and not SyntheticProvider.capabilities.remote
    settings = run_settings()
    assert spread_over(settings, slow.capabilities) == settings.task_workers
    assert spread_over(settings, quick.capabilities) == 1 or settings.task_runner == "processes"
    with pytest.raises(BadInputError, match="latency_ms"):
        get_provider("synthetic", {"latency_ms": -1})
