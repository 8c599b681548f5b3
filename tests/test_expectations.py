import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from candleflow.model import Chunk
from candleflow.timeframes import get_timeframe
from expectations import load_suite, validate_bars
from expectations.validate import suite_path
from providers import get_provider
from providers.base import FetchRequest
from providers.frames import canonical_frame
from tests.conftest import FIXTURES

START, END = pd.Timestamp("2024-03-01", tz="UTC"), pd.Timestamp("2024-04-01", tz="UTC")
CHUNK = Chunk("synthetic", "AAPL", "1h", START, END)


@pytest.fixture(scope="module")
def good() -> pd.DataFrame:
    return get_provider("synthetic").fetch(FetchRequest(("AAPL",), get_timeframe("1h"), START, END)).bars


def test_suite_file_holds_every_rule_of_design() -> None:
    spec = json.loads(suite_path("ohlcv").read_text())
    rules = {e["meta"]["rule"] for e in spec["expectations"]}
    for col in ("provider", "symbol", "timeframe", "ts", "open", "high", "low", "close", "volume"):
        assert f"{col} not null" in rules
    assert {"high >= open", "high >= close", "high >= low", "low <= open", "low <= close"} <= rules
    assert {"open > 0", "high > 0", "low > 0", "close > 0", "volume >= 0", "(symbol, ts) unique"} <= rules
    assert {
        "ts on the timeframe grid",
        "ts inside the chunk window (ts >= window_start)",
        "ts inside the chunk window (ts < window_end)",
    } <= rules
    assert len(load_suite("ohlcv").expectations) == len(spec["expectations"])


def test_valid_bars_pass(good: pd.DataFrame) -> None:
    report = validate_bars([(CHUNK, good)])
    assert report.ok and report.verdicts[0].bad_rows == {}


def _set(col: str, value: object) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def mutate(frame: pd.DataFrame) -> pd.DataFrame:
        frame.loc[7, col] = value
        return frame

    return mutate


CASES = [
    (
        "high below low",
        lambda f: f.assign(high=np.where(f.index == 7, f["low"] - 0.5, f["high"])),
        "high >= low",
    ),
    (
        "high below open",
        lambda f: f.assign(high=np.where(f.index == 7, f["open"] - 0.01, f["high"])),
        "high >= open",
    ),
    (
        "high below close",
        lambda f: f.assign(high=np.where(f.index == 7, f["close"] - 0.01, f["high"])),
        "high >= close",
    ),
    (
        "low above open",
        lambda f: f.assign(low=np.where(f.index == 7, f["open"] + 0.01, f["low"])),
        "low <= open",
    ),
    (
        "low above close",
        lambda f: f.assign(low=np.where(f.index == 7, f["close"] + 0.01, f["low"])),
        "low <= close",
    ),
    ("zero open", _set("open", 0.0), "open > 0"),
    ("negative low", _set("low", -1.0), "low > 0"),
    ("negative close", _set("close", -2.0), "close > 0"),
    ("zero high", _set("high", 0.0), "high > 0"),
    ("negative volume", _set("volume", -5.0), "volume >= 0"),
    ("null close", _set("close", np.nan), "close not null"),
    ("null volume", _set("volume", np.nan), "volume not null"),
    ("null ts", _set("ts", pd.NaT), "ts not null"),
    (
        "off grid",
        lambda f: f.assign(ts=f["ts"].where(f.index != 7, f["ts"] + pd.Timedelta(seconds=1))),
        "ts on the timeframe grid",
    ),
    (
        "before window",
        lambda f: f.assign(ts=f["ts"].where(f.index != 7, START - pd.Timedelta(hours=1))),
        "ts inside the chunk window (ts >= window_start)",
    ),
    (
        "at window end",
        lambda f: f.assign(ts=f["ts"].where(f.index != 7, END)),
        "ts inside the chunk window (ts < window_end)",
    ),
    ("duplicate", lambda f: f.assign(ts=f["ts"].where(f.index != 7, f["ts"].iloc[6])), "(symbol, ts) unique"),
]


@pytest.mark.parametrize(("name", "mutate", "rule"), CASES, ids=[c[0] for c in CASES])
def test_each_rule_catches_its_own_bad_bar(good: pd.DataFrame, name: str, mutate, rule: str) -> None:  # type: ignore[no-untyped-def]
    verdict = validate_bars([(CHUNK, mutate(good.copy()))]).verdicts[0]
    assert not verdict.ok
    assert rule in verdict.failed_rules
    assert rule in verdict.bad_rows[7]


def test_missing_column_fails_the_whole_chunk(good: pd.DataFrame) -> None:
    verdict = validate_bars([(CHUNK, good.drop(columns=["volume"]))]).verdicts[0]
    assert "required columns present" in verdict.failed_rules


def test_failures_map_back_to_their_own_chunk(good: pd.DataFrame) -> None:
    other = Chunk("synthetic", "MSFT", "1h", START, END)
    msft = get_provider("synthetic").fetch(FetchRequest(("MSFT",), get_timeframe("1h"), START, END)).bars
    msft.loc[3, "high"] = msft.loc[3, "low"] - 1
    empty = Chunk("synthetic", "IBM", "1h", START, END)
    report = validate_bars([(CHUNK, good), (other, msft), (empty, good.iloc[0:0])])
    assert [v.ok for v in report.verdicts] == [True, False, True]
    assert list(report.verdicts[1].bad_rows) == [3]


# Real recorded vendor bars ------------------------------------------------------------------------------

DBN = FIXTURES / "databento-python" / "tests" / "data"
DBN_FILES = sorted(p for p in DBN.glob("*/test_data.ohlcv-1[dhm].dbn.zst"))


def _databento_frame(path: Path) -> tuple[Chunk, pd.DataFrame]:
    import databento

    raw = databento.DBNStore.from_file(path).to_df().reset_index()
    timeframe = path.name.split(".")[1].removeprefix("ohlcv-")
    frame = canonical_frame(raw.rename(columns={"ts_event": "ts"}), provider="databento", timeframe=timeframe)
    day = frame["ts"].min().normalize()
    return Chunk("databento", str(frame["symbol"].iloc[0]), timeframe, day, day + pd.Timedelta(days=1)), frame


def test_fixtures_are_present() -> None:
    assert len(DBN_FILES) == 18, "../shared/fixtures is missing: the recorded vendor data must sit beside the repo"


# Each recorded dataset's venue calendar: US equities and options on XNYS (Databento sends pre- and post-market
# bars: extended hours), CME Globex futures on CMES, ICE's futures venues on IEPA (ICE's near-24-hour session).
VENUE_CALENDARS = {"GLBX.MDP3": "CMES", "IFEU.IMPACT": "IEPA", "NDEX.IMPACT": "IEPA"}


@pytest.mark.parametrize("path", DBN_FILES, ids=[f"{p.parent.name}-{p.name.split('.')[1]}" for p in DBN_FILES])
def test_recorded_databento_bars(path: Path) -> None:
    chunk, frame = _databento_frame(path)
    calendar = VENUE_CALENDARS.get(path.parent.name, "XNYS")
    verdict = validate_bars([(chunk, frame)], calendar=calendar, hours="extended").verdicts[0]
    if path.parent.name == "OPRA.PILLAR":
        # several venues publish a bar for the same instrument and minute: (symbol, ts) is not unique
        assert verdict.failed_rules == ["(symbol, ts) unique"]
    else:
        assert verdict.ok, verdict.failed_rules


POLYGON = FIXTURES / "massive-client-python" / "test_rest" / "mocks" / "v2" / "aggs" / "ticker" / "AAPL"


def _polygon_daily() -> pd.DataFrame:
    payload = json.loads((POLYGON / "range" / "1" / "day" / "2005-04-01" / "2005-04-04.json").read_text())
    raw = pd.DataFrame(payload["results"]).rename(
        columns={
            "o": "open",
            "h": "high",
            "l": "low",
            "c": "close",
            "v": "volume",
            "vw": "vwap",
            "n": "trades",
        }
    )
    raw["ts"] = pd.to_datetime(raw["t"], unit="ms", utc=True)
    raw["symbol"] = payload["ticker"]
    return raw


def test_recorded_polygon_daily_bars_pass_once_session_dated() -> None:
    raw = _polygon_daily()
    chunk = Chunk("polygon", "AAPL", "1d", pd.Timestamp("2005-01-01", tz="UTC"), pd.Timestamp("2006-01-01", tz="UTC"))
    # Polygon stamps daily bars at midnight New York (05:00Z, then 04:00Z after the DST change)...
    as_sent = canonical_frame(raw, provider="polygon", timeframe="1d")
    assert validate_bars([(chunk, as_sent)]).verdicts[0].failed_rules == ["ts on the timeframe grid"]
    # ...candleflow keys them by session date at 00:00 UTC.
    session = raw["ts"].dt.tz_convert("America/New_York").dt.tz_localize(None).dt.normalize().dt.tz_localize("UTC")
    dated = canonical_frame(raw.assign(ts=session), provider="polygon", timeframe="1d")
    assert dated["ts"].dt.strftime("%Y-%m-%d").tolist() == ["2005-04-01", "2005-04-04"]
    assert validate_bars([(chunk, dated)]).verdicts[0].ok
