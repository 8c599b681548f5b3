"""An update extends its series' ledger row of the calendar period instead of adding a row per series per day
(Chunk.extends): on SQLite and PostgreSQL, through the loader and through real flow runs."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from candleflow.checksum import frame_checksum
from candleflow.model import Chunk, LedgerEntry, LedgerStatus
from candleflow.planning import extension_of, segment_start
from candleflow.timeframes import ChunkPeriod, get_timeframe
from providers import get_provider
from providers.base import FetchRequest
from warehouse.batch_load import ChunkLoad, load_extensions, settle_unchanged
from warehouse.engine import get_engine
from warehouse.ledger import record_failure
from warehouse.load import load_chunk
from warehouse.schema import ensure_schema

D = dt.date


def ts(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


def entry(start: str, end: str, status: LedgerStatus = LedgerStatus.LOADED, **values: object) -> LedgerEntry:
    return LedgerEntry("synthetic", "AAPL", "1d", ts(start), ts(end), status, **values)  # type: ignore[arg-type]


def chunk(start: str, end: str, extends: str | None = None, symbol: str = "AAPL") -> Chunk:
    return Chunk("synthetic", symbol, "1d", ts(start), ts(end), extends=None if extends is None else ts(extends))


# --- planning: which row a chunk extends -------------------------------------------------------------------------


def test_segment_start_joins_windows_that_touch_or_overlap() -> None:
    spans = [
        (ts("2024-01-01"), ts("2024-07-06")),
        (ts("2024-07-03"), ts("2024-07-09")),
        (ts("2024-08-01"), ts("2024-08-05")),
    ]
    assert segment_start(spans, ts("2024-07-08")) == (ts("2024-01-01"), ts("2024-07-09"))
    assert segment_start(spans, ts("2024-07-09")) == (ts("2024-01-01"), ts("2024-07-09"))  # reaches it: touches
    assert segment_start(spans, ts("2024-07-20")) is None  # a hole before it
    assert segment_start(spans, ts("2024-08-02")) == (ts("2024-08-01"), ts("2024-08-05"))
    assert segment_start([], ts("2024-08-02")) is None


def test_an_update_chunk_extends_the_row_its_period_already_has() -> None:
    update = chunk("2024-07-03", "2024-07-09")
    year = ChunkPeriod.YEAR
    backfilled = [entry("2024-01-01", "2024-07-06")]
    assert extension_of(update, backfilled, year, "adjusted").extends == ts("2024-01-01")
    # per-day rows an older candleflow added chain back to the period's first row
    older = [*backfilled, entry("2024-07-05", "2024-07-08"), entry("2024-07-08", "2024-07-09")]
    assert extension_of(chunk("2024-07-08", "2024-07-10"), older, year, "adjusted").extends == ts("2024-01-01")


@pytest.mark.parametrize(
    ("rows", "why"),
    [
        ([entry("2024-01-01", "2024-06-01")], "a hole between the row and the window"),
        ([entry("2024-01-01", "2024-07-06", LedgerStatus.FAILED)], "the row says its bars are not all there"),
        ([entry("2024-01-01", "2024-07-06", LedgerStatus.PARTIAL)], "the row says rows were quarantined"),
        ([entry("2024-01-01", "2024-07-06", rows=100, present=90)], "bars deleted behind the ledger's back"),
        ([entry("2024-01-01", "2024-07-06", adjustment="raw")], "another adjustment"),
        ([entry("2023-01-01", "2024-07-06")], "the row starts in another period"),
        ([entry("2024-01-01", "2024-07-20")], "the row reaches past the window: it would claim less"),
        ([entry("2024-07-03", "2024-07-06")], "the row starts where the window does: it is the chunk's own"),
        (
            [
                entry("2024-01-01", "2024-07-06").__class__(
                    "synthetic", "MSFT", "1d", ts("2024-01-01"), ts("2024-07-06"), LedgerStatus.LOADED
                )
            ],
            "another series",
        ),
    ],
)
def test_an_update_chunk_extends_no_row_that_cannot_vouch_for_it(rows: list[LedgerEntry], why: str) -> None:
    assert extension_of(chunk("2024-07-03", "2024-07-09"), rows, ChunkPeriod.YEAR, "adjusted").extends is None, why


def test_session_chunks_extend_nothing() -> None:
    rows = [entry("2024-07-01", "2024-07-02")]
    assert extension_of(chunk("2024-07-02", "2024-07-03"), rows, ChunkPeriod.SESSION, None).extends is None


# --- the loader ---------------------------------------------------------------------------------------------------


@pytest.fixture
def engine(warehouse_url: str) -> sa.Engine:
    eng = get_engine(warehouse_url)
    ensure_schema(eng)
    return eng


def fetched(symbol: str, start: str, end: str) -> pd.DataFrame:
    request = FetchRequest((symbol,), get_timeframe("1d"), ts(start), ts(end))
    return get_provider("synthetic").fetch(request).bars


def load(engine: sa.Engine, c: Chunk, frame: pd.DataFrame):  # type: ignore[no-untyped-def]
    return load_chunk(engine, c, frame, checksum=frame_checksum(frame), flow_run_id="run", adjustment="adjusted")


def ledger(engine: sa.Engine) -> list[tuple[object, ...]]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT symbol, window_start, window_end, status, rows, revisions FROM ingest_ledger "
                "ORDER BY symbol, window_start"
            )
        ).all()
    return [(r[0], pd.Timestamp(r[1]).date(), pd.Timestamp(r[2]).date(), r[3], r[4], r[5]) for r in rows]


def stored(engine: sa.Engine) -> pd.DataFrame:
    with engine.connect() as conn:
        frame = pd.read_sql(sa.text("SELECT ts, close FROM bars ORDER BY ts"), conn)
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
    return frame


def test_an_extending_load_grows_the_row_and_counts_the_whole_window(engine: sa.Engine) -> None:
    first = fetched("AAPL", "2024-01-01", "2024-01-11")
    load(engine, chunk("2024-01-01", "2024-01-11"), first)
    more = fetched("AAPL", "2024-01-08", "2024-01-13")
    outcome = load(engine, chunk("2024-01-08", "2024-01-13", extends="2024-01-01"), more)
    assert (outcome.status, outcome.rows, outcome.written, outcome.unchanged) == ("loaded", len(more), 2, False)
    everything = fetched("AAPL", "2024-01-01", "2024-01-13")
    assert ledger(engine) == [("AAPL", D(2024, 1, 1), D(2024, 1, 13), "loaded", len(everything), 0)]
    # the same fetch again: held, nothing written, the row as it was
    again = load(engine, chunk("2024-01-08", "2024-01-13", extends="2024-01-01"), more)
    assert (again.written, again.unchanged) == (0, True)
    assert ledger(engine) == [("AAPL", D(2024, 1, 1), D(2024, 1, 13), "loaded", len(everything), 0)]
    # and the extended row holds a backfill of its whole window
    assert load(engine, chunk("2024-01-01", "2024-01-13"), everything).written == 0


def test_an_extending_load_counts_a_restated_final_bar_and_removes_only_inside_its_window(engine: sa.Engine) -> None:
    first = fetched("AAPL", "2024-01-01", "2024-01-11")
    load(engine, chunk("2024-01-01", "2024-01-11"), first)  # final: its window lies in the past
    more = fetched("AAPL", "2024-01-08", "2024-01-13")
    more.loc[more["ts"] == ts("2024-01-08"), "close"] += 1.0  # the vendor restated a final bar
    more = more[more["ts"] != ts("2024-01-09")].reset_index(drop=True)  # and dropped another
    outcome = load(engine, chunk("2024-01-08", "2024-01-13", extends="2024-01-01"), more)
    assert (outcome.revised, outcome.removed) == (True, 1)
    after = stored(engine)
    assert ts("2024-01-09") not in set(after["ts"])
    assert set(first["ts"][first["ts"] < ts("2024-01-08")]) <= set(after["ts"])  # nothing before the window removed
    n = len(after)
    assert ledger(engine) == [("AAPL", D(2024, 1, 1), D(2024, 1, 13), "loaded", n, 1)]


def test_an_extending_load_of_a_row_gone_bad_loads_on_its_own_row(engine: sa.Engine) -> None:
    load(engine, chunk("2024-01-01", "2024-01-11"), fetched("AAPL", "2024-01-01", "2024-01-11"))
    record_failure(engine, chunk("2024-01-01", "2024-01-11"), "boom", flow_run_id="other")  # another run, meanwhile
    more = fetched("AAPL", "2024-01-08", "2024-01-13")
    load(engine, chunk("2024-01-08", "2024-01-13", extends="2024-01-01"), more)
    rows = ledger(engine)
    assert [(r[1], r[2], r[3]) for r in rows] == [
        (D(2024, 1, 1), D(2024, 1, 11), "failed"),
        (D(2024, 1, 8), D(2024, 1, 13), "loaded"),
    ]


def test_a_failed_update_keeps_its_own_row_and_the_next_one_folds_it(engine: sa.Engine) -> None:
    load(engine, chunk("2024-01-01", "2024-01-11"), fetched("AAPL", "2024-01-01", "2024-01-11"))
    record_failure(engine, chunk("2024-01-08", "2024-01-13", extends="2024-01-01"), "vendor down", flow_run_id="u1")
    assert [r[3] for r in ledger(engine)] == ["loaded", "failed"]  # the backfilled row still says loaded
    load(engine, chunk("2024-01-08", "2024-01-13", extends="2024-01-01"), fetched("AAPL", "2024-01-08", "2024-01-13"))
    n = len(fetched("AAPL", "2024-01-01", "2024-01-13"))
    assert ledger(engine) == [("AAPL", D(2024, 1, 1), D(2024, 1, 13), "loaded", n, 0)]


def test_a_batch_of_unchanged_updates_is_held_together(engine: sa.Engine) -> None:
    symbols = [f"S{i:02d}" for i in range(6)]
    for s in symbols:
        load(engine, chunk("2024-01-01", "2024-01-11", symbol=s), fetched(s, "2024-01-01", "2024-01-11"))
    loads = []
    for s in symbols:
        c = chunk("2024-01-08", "2024-01-13", extends="2024-01-01", symbol=s)
        frame = fetched(s, "2024-01-08", "2024-01-13")
        loads.append(ChunkLoad(c, frame, frame_checksum(frame), adjustment="adjusted"))
    with engine.connect() as conn:
        assert settle_unchanged(conn, loads) == {}  # the rows end 01-11: each must grow
        grown = load_extensions(conn, loads, flow_run_id="run")  # in one transaction
    assert sorted(grown) == list(range(len(symbols))) and all(o.written == 2 for o in grown.values())
    before = ledger(engine)
    n = len(fetched("S00", "2024-01-01", "2024-01-13"))
    assert before == [(s, D(2024, 1, 1), D(2024, 1, 13), "loaded", n, 0) for s in symbols]
    assert len(before) == len(symbols) and {r[2] for r in before} == {D(2024, 1, 13)}
    changed = loads[2].frame.copy()
    changed.loc[0, "close"] += 0.5  # one series' vendor bar differs from the stored one
    loads[2] = ChunkLoad(loads[2].chunk, changed, frame_checksum(changed), adjustment="adjusted")
    with engine.connect() as conn:
        held = settle_unchanged(conn, loads)
    assert sorted(held) == [0, 1, 3, 4, 5] and all(o.unchanged and o.written == 0 for o in held.values())
    assert ledger(engine) == before


def mixed_updates(engine: sa.Engine, prefix: str) -> list[ChunkLoad]:
    """Six series backfilled to 01-11, and their updates to 01-13, each a different case for one batch."""
    names = [f"{prefix}{case}" for case in ("NEW", "RESTATED", "NULLS", "GONEBAD", "PERDAY", "EMPTY")]
    for s in names:
        load(engine, chunk("2024-01-01", "2024-01-11", symbol=s), fetched(s, "2024-01-01", "2024-01-11"))
    record_failure(engine, chunk("2024-01-01", "2024-01-11", symbol=names[3]), "boom", flow_run_id="other")
    load(engine, chunk("2024-01-11", "2024-01-12", symbol=names[4]), fetched(names[4], "2024-01-11", "2024-01-12"))
    loads = []
    for s in names:
        frame = fetched(s, "2024-01-08", "2024-01-13")
        if s == names[1]:  # a final bar restated and another dropped
            frame.loc[frame["ts"] == ts("2024-01-08"), "close"] += 1.0
            frame = frame[frame["ts"] != ts("2024-01-09")].reset_index(drop=True)
        if s == names[2]:  # the new bar without vwap and trades
            frame.loc[frame["ts"] == ts("2024-01-12"), ["vwap", "trades"]] = [np.nan, pd.NA]
        if s == names[5]:  # the vendor has no bar in the window any more
            frame = frame.iloc[0:0]
        c = chunk("2024-01-08", "2024-01-13", extends="2024-01-01", symbol=s)
        loads.append(ChunkLoad(c, frame, frame_checksum(frame), adjustment="adjusted"))
    return loads


def test_a_batch_of_mixed_updates_loads_together_as_each_would_alone(engine: sa.Engine) -> None:
    together = mixed_updates(engine, "A")
    with engine.connect() as conn:
        outcomes = load_extensions(conn, together, flow_run_id="run")
    for item in together:
        if together.index(item) not in outcomes:  # its row went bad: loaded on its own row, as the batch does
            load(engine, item.chunk, item.frame)
    alone = [load(engine, item.chunk, item.frame) for item in mixed_updates(engine, "B")]
    assert sorted(outcomes) == [0, 1, 2, 4, 5]
    for i, outcome in outcomes.items():
        assert outcome == alone[i], together[i].chunk.symbol
    summary = {together[i].chunk.symbol: (o.written, o.removed, o.revised) for i, o in outcomes.items()}
    assert summary == {
        "ANEW": (2, 0, False),
        "ARESTATED": (3, 1, True),  # the restated 01-08 bar and the new 01-11 and 01-12; 01-09 removed
        "ANULLS": (2, 0, False),
        "APERDAY": (1, 0, False),  # 01-11 was there already, from its own per-day row
        "AEMPTY": (0, 3, True),  # 01-08, 01-09, 01-10 were final and are gone
    }
    rows = ledger(engine)
    assert [r[1:] for r in rows if r[0].startswith("A")] == [r[1:] for r in rows if r[0].startswith("B")]
    assert [r for r in rows if r[0] == "APERDAY"] == [
        ("APERDAY", D(2024, 1, 1), D(2024, 1, 13), "loaded", len(fetched("X", "2024-01-01", "2024-01-13")), 0)
    ]
    with engine.connect() as conn:
        frame = pd.read_sql(sa.text("SELECT * FROM bars ORDER BY symbol, ts"), conn)
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
    for item in together:  # each series: its earlier bars before the window, then exactly what the update fetched
        s = item.chunk.symbol
        earlier = fetched(s, "2024-01-01", "2024-01-11")
        expected = pd.concat([earlier[earlier["ts"] < ts("2024-01-08")], item.frame], ignore_index=True)
        got = frame[frame["symbol"] == s].reset_index(drop=True)
        assert list(got["ts"]) == list(expected["ts"]), s
        assert np.allclose(got["close"], expected["close"], rtol=0, atol=0), s
    nulls = frame[(frame["symbol"] == "ANULLS") & (pd.to_datetime(frame["ts"], utc=True) == ts("2024-01-12"))]
    assert nulls["vwap"].isna().all() and nulls["trades"].isna().all()


def test_the_stored_bars_checksum_equals_the_fetched_one_with_nulls(engine: sa.Engine) -> None:
    frame = fetched("AAPL", "2024-01-01", "2024-01-11")
    frame.loc[1, "vwap"] = np.nan
    frame.loc[2, "trades"] = pd.NA
    load(engine, chunk("2024-01-01", "2024-01-11"), frame)
    more = frame.iloc[3:].reset_index(drop=True)
    again = load(engine, chunk(str(more["ts"][0].date()), "2024-01-11", extends="2024-01-01"), more)
    assert again.unchanged, "NULL vwap and trades read back must checksum as the provider's NaN and NA"


# --- flow runs ----------------------------------------------------------------------------------------------------

SYMBOLS = ["AAPL", "MSFT", "BRK.A"]


def bars_of(url: str) -> pd.DataFrame:
    with get_engine(url).connect() as conn:
        frame = pd.read_sql(sa.text("SELECT * FROM bars ORDER BY symbol, timeframe, ts"), conn)
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
    return frame


def ledger_table(url: str) -> pd.DataFrame:
    with get_engine(url).connect() as conn:
        return pd.read_sql(sa.text("SELECT * FROM ingest_ledger ORDER BY symbol, timeframe, window_start"), conn)


@pytest.mark.flows
@pytest.mark.usefixtures("prefect_harness")
def test_daily_updates_keep_one_row_per_series_and_a_rerun_writes_nothing(
    warehouse_url: str, reference_url: str
) -> None:
    from flows.backfill import historical_backfill
    from flows.incremental import incremental_update

    historical_backfill(symbols=SYMBOLS, start=D(2024, 1, 2), end=D(2024, 6, 28), warehouse_url=warehouse_url)
    for day in (D(2024, 7, 1), D(2024, 7, 2), D(2024, 7, 3), D(2024, 7, 5), D(2024, 7, 8)):
        update = incremental_update(symbols=SYMBOLS, end=day, warehouse_url=warehouse_url)
        assert update.ok and update.bars_written == len(SYMBOLS)  # the new session's bar of each series
        rows = ledger_table(warehouse_url)
        assert len(rows) == len(SYMBOLS), f"{day}: {len(rows)} ledger rows"
        assert set(pd.to_datetime(rows["window_end"], utc=True)) == {pd.Timestamp(day, tz="UTC") + pd.Timedelta(days=1)}
    historical_backfill(symbols=SYMBOLS, start=D(2024, 1, 2), end=D(2024, 7, 8), warehouse_url=reference_url)
    pd.testing.assert_frame_equal(bars_of(warehouse_url), bars_of(reference_url), check_dtype=False)
    counts = bars_of(warehouse_url).groupby("symbol").size().to_dict()
    assert ledger_table(warehouse_url).set_index("symbol")["rows"].to_dict() == counts
    before = ledger_table(warehouse_url)
    again = incremental_update(symbols=SYMBOLS, end=D(2024, 7, 8), warehouse_url=warehouse_url)
    assert again.ok and again.bars_written == 0 and all(r.unchanged for r in again.results)
    pd.testing.assert_frame_equal(ledger_table(warehouse_url), before)  # not even updated_at changed
    # the backfill finds the whole window held by the extended rows
    assert (
        historical_backfill(symbols=SYMBOLS, start=D(2024, 1, 2), end=D(2024, 7, 8), warehouse_url=warehouse_url).todo
        == []
    )


@pytest.mark.flows
@pytest.mark.usefixtures("prefect_harness")
def test_an_update_across_a_period_boundary_starts_the_next_periods_row(sqlite_url: str) -> None:
    from flows.backfill import historical_backfill
    from flows.incremental import incremental_update

    historical_backfill(
        symbols=["SPY"], start=D(2024, 3, 1), end=D(2024, 3, 27), timeframe="1h", warehouse_url=sqlite_url
    )
    assert incremental_update(symbols=["SPY"], timeframes=["1h"], end=D(2024, 4, 3), warehouse_url=sqlite_url).ok
    rows = ledger_table(sqlite_url)
    spans = [
        (pd.Timestamp(a).date(), pd.Timestamp(b).date())
        for a, b in zip(rows.window_start, rows.window_end, strict=True)
    ]
    assert spans == [(D(2024, 3, 1), D(2024, 4, 1)), (D(2024, 4, 1), D(2024, 4, 4))]  # Q1's row, then Q2's


@pytest.mark.flows
@pytest.mark.usefixtures("prefect_harness")
def test_per_day_rows_of_an_older_candleflow_fold_on_the_next_update(
    warehouse_url: str, reference_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import flows.incremental
    from flows.backfill import historical_backfill
    from flows.incremental import incremental_update
    from warehouse.queries import read_ledger

    historical_backfill(symbols=SYMBOLS, start=D(2024, 1, 2), end=D(2024, 6, 28), warehouse_url=warehouse_url)
    with monkeypatch.context() as older:  # an older candleflow: each update keyed its own row at its fetch start
        older.setattr(flows.incremental, "extension_of", lambda c, *_: c)
        for day in (D(2024, 7, 1), D(2024, 7, 2), D(2024, 7, 3)):
            incremental_update(symbols=SYMBOLS, end=day, warehouse_url=warehouse_url)
    assert len(ledger_table(warehouse_url)) == 4 * len(SYMBOLS)
    # read correctly as they are: a backfill of the window finds it held
    assert (
        historical_backfill(symbols=SYMBOLS, start=D(2024, 1, 2), end=D(2024, 7, 3), warehouse_url=warehouse_url).todo
        == []
    )
    update = incremental_update(symbols=SYMBOLS, end=D(2024, 7, 5), warehouse_url=warehouse_url)
    assert update.ok
    entries = read_ledger(get_engine(warehouse_url), count_bars=True)
    assert sorted((e.symbol, e.window_start.date(), e.window_end.date(), e.status) for e in entries) == [
        (s, D(2024, 1, 2), D(2024, 7, 6), LedgerStatus.LOADED) for s in sorted(SYMBOLS)
    ]
    assert all(e.rows == e.present for e in entries)
    historical_backfill(symbols=SYMBOLS, start=D(2024, 1, 2), end=D(2024, 7, 5), warehouse_url=reference_url)
    pd.testing.assert_frame_equal(bars_of(warehouse_url), bars_of(reference_url), check_dtype=False)
