"""Loader behaviour on the real databases: idempotence, changes, atomicity, quarantine, failures."""

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from candleflow.checksum import frame_checksum
from candleflow.model import Chunk, LedgerStatus
from candleflow.timeframes import get_timeframe
from providers import get_provider
from providers.base import FetchRequest
from tests.conftest import count
from warehouse.batch_load import ChunkLoad, load_fresh_chunks, settle_unchanged
from warehouse.engine import get_engine
from warehouse.ledger import record_failure
from warehouse.load import load_chunk
from warehouse.quarantine import reject_chunk
from warehouse.queries import bars_per_session_of, read_ledger, read_watermarks
from warehouse.schema import ensure_schema

START, END = pd.Timestamp("2024-03-01", tz="UTC"), pd.Timestamp("2024-04-01", tz="UTC")
CHUNK = Chunk("synthetic", "AAPL", "1m", START, END)


@pytest.fixture(scope="module")
def minutes() -> pd.DataFrame:
    frame = get_provider("synthetic").fetch(FetchRequest(("AAPL",), get_timeframe("1m"), START, END)).bars
    frame.loc[3, "vwap"] = np.nan  # NULLs must survive every load path
    frame.loc[5, "trades"] = pd.NA
    return frame


@pytest.fixture
def engine(warehouse_url: str) -> sa.Engine:
    eng = get_engine(warehouse_url)
    ensure_schema(eng)
    ensure_schema(eng)  # idempotent
    return eng


def load(engine: sa.Engine, frame: pd.DataFrame, chunk: Chunk = CHUNK, run: str = "run-1"):  # type: ignore[no-untyped-def]
    return load_chunk(engine, chunk, frame, checksum=frame_checksum(frame), flow_run_id=run)


def read_bars(engine: sa.Engine) -> pd.DataFrame:
    with engine.connect() as conn:
        frame = pd.read_sql(sa.text("SELECT * FROM bars ORDER BY symbol, ts"), conn)
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True).dt.as_unit("us")
    frame["trades"] = frame["trades"].astype("Int64")
    return frame


def test_load_round_trips_every_value(engine: sa.Engine, minutes: pd.DataFrame) -> None:
    outcome = load(engine, minutes)
    assert (outcome.status, outcome.rows, outcome.written, outcome.unchanged) == (
        LedgerStatus.LOADED,
        len(minutes),
        len(minutes),
        False,
    )
    back = read_bars(engine)
    pd.testing.assert_frame_equal(back, minutes, check_dtype=False)
    assert pd.isna(back.loc[3, "vwap"]) and pd.isna(back.loc[5, "trades"])
    (entry,) = read_ledger(engine)
    assert (entry.status, entry.rows, entry.checksum) == (
        LedgerStatus.LOADED,
        len(minutes),
        frame_checksum(minutes),
    )
    assert entry.window_start == START and entry.window_end == END
    assert read_watermarks(engine, "synthetic", ["AAPL"], "1m") == {"AAPL": minutes["ts"].max()}
    per_day = bars_per_session_of(engine, "synthetic", ["AAPL"], "1m", START, END).get("AAPL", {})
    assert len(per_day) == 20 and set(per_day.values()) == {390}  # March 2024: 20 sessions (Good Friday shut)


def test_loading_twice_leaves_the_same_rows_and_writes_nothing(engine: sa.Engine, minutes: pd.DataFrame) -> None:
    load(engine, minutes)
    again = load(engine, minutes, run="run-2")
    assert again.unchanged and again.written == 0
    assert count(str(engine.url.render_as_string(hide_password=False)), "SELECT count(*) FROM bars") == len(minutes)
    (entry,) = read_ledger(engine)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT flow_run_id FROM ingest_ledger")).scalar() == "run-1"
    assert entry.rows == len(minutes)


def test_changed_rows_are_updated_and_only_they_are_written(engine: sa.Engine, minutes: pd.DataFrame) -> None:
    load(engine, minutes)
    changed = minutes.copy()
    changed.loc[[10, 20, 30], "close"] = changed.loc[[10, 20, 30], "close"] + 0.01
    changed.loc[[10, 20, 30], "high"] = changed.loc[[10, 20, 30], ["high", "close"]].max(axis=1)
    outcome = load(engine, changed, run="run-2")
    assert not outcome.unchanged and outcome.written == 3
    pd.testing.assert_frame_equal(read_bars(engine), changed, check_dtype=False)
    (entry,) = read_ledger(engine)
    assert entry.checksum == frame_checksum(changed)


def test_missing_bars_under_an_unchanged_checksum_are_reloaded(engine: sa.Engine, minutes: pd.DataFrame) -> None:
    load(engine, minutes)
    with engine.begin() as conn:
        conn.execute(
            sa.text("DELETE FROM bars WHERE ts < :t"),
            {"t": pd.Timestamp("2024-03-05", tz="UTC").to_pydatetime()},
        )
    outcome = load(engine, minutes, run="run-2")
    assert not outcome.unchanged and outcome.written > 0
    assert len(read_bars(engine)) == len(minutes)


def test_empty_chunk_is_recorded_as_empty(engine: sa.Engine, minutes: pd.DataFrame) -> None:
    holiday = Chunk(
        "synthetic", "AAPL", "1d", pd.Timestamp("2024-12-25", tz="UTC"), pd.Timestamp("2024-12-26", tz="UTC")
    )
    outcome = load(engine, minutes.iloc[0:0], chunk=holiday)
    assert outcome.status is LedgerStatus.EMPTY and outcome.rows == 0
    assert read_ledger(engine)[0].status is LedgerStatus.EMPTY


def test_a_failure_mid_load_leaves_neither_bars_nor_ledger_row(engine: sa.Engine, minutes: pd.DataFrame) -> None:
    broken = minutes.copy()
    broken.loc[5000, "close"] = np.nan  # NOT NULL violation deep inside the batch
    with pytest.raises(sa.exc.IntegrityError):
        load(engine, broken)
    assert read_bars(engine).empty
    assert read_ledger(engine) == []


def test_a_failure_after_the_bars_are_written_rolls_them_back(engine: sa.Engine, minutes: pd.DataFrame) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE ingest_ledger"))
        conn.execute(
            sa.text(
                "CREATE TABLE ingest_ledger (provider varchar(32), symbol varchar(32), timeframe varchar(8), "
                "window_start timestamp, window_end timestamp, status varchar(16), rows bigint, checksum varchar(64), "
                "flow_run_id varchar(64), updated_at timestamp, error text, adjustment varchar(16), "
                "source_version varchar(128), complete_through timestamp, revisions integer, "
                "PRIMARY KEY (provider, symbol, timeframe, window_start), CHECK (status = 'never'))"
            )
        )
    with pytest.raises(sa.exc.IntegrityError):
        load(engine, minutes)  # bars go in first, then the ledger row violates its CHECK
    assert read_bars(engine).empty


def test_an_older_ledger_gains_the_new_columns_and_keeps_its_rows(engine: sa.Engine, minutes: pd.DataFrame) -> None:
    load(engine, minutes)
    with engine.begin() as conn:  # the ledger as the first release created it
        conn.execute(sa.text("CREATE TABLE old_ledger AS SELECT * FROM ingest_ledger"))
        conn.execute(sa.text("DROP TABLE ingest_ledger"))
        conn.execute(
            sa.text(
                "CREATE TABLE ingest_ledger (provider varchar(32), symbol varchar(32), timeframe varchar(8), "
                "window_start timestamp, window_end timestamp, status varchar(16), rows bigint, checksum varchar(64), "
                "flow_run_id varchar(64), updated_at timestamp, error text, "
                "PRIMARY KEY (provider, symbol, timeframe, window_start))"
            )
        )
        conn.execute(
            sa.text(
                "INSERT INTO ingest_ledger SELECT provider, symbol, timeframe, window_start, window_end, status, rows, "
                "checksum, flow_run_id, updated_at, error FROM old_ledger"
            )
        )
    ensure_schema(engine)
    ensure_schema(engine)
    (entry,) = read_ledger(engine)
    assert entry.status is LedgerStatus.LOADED and entry.rows == len(minutes)
    assert entry.adjustment is None and entry.source_version is None
    outcome = load(engine, minutes)  # the same bars again: unchanged, and now described
    assert outcome.unchanged
    outcome = load_chunk(
        engine, CHUNK, minutes, checksum=frame_checksum(minutes), flow_run_id="r", adjustment="raw", source_version="e1"
    )
    assert outcome.unchanged and outcome.written == 0
    (entry,) = read_ledger(engine)
    assert (entry.adjustment, entry.source_version) == ("raw", "e1")


def test_reject_quarantines_every_row_and_loads_nothing(engine: sa.Engine, minutes: pd.DataFrame) -> None:
    bad = {7: ["high >= low"], 9: ["close not null"]}
    outcome = reject_chunk(engine, CHUNK, minutes, bad, ["high >= low", "close not null"], flow_run_id="run-9")
    assert outcome.status is LedgerStatus.REJECTED and outcome.written == 0
    assert read_bars(engine).empty
    with engine.connect() as conn:
        rows = pd.read_sql(sa.text("SELECT * FROM quarantine ORDER BY id"), conn)
    assert len(rows) == len(minutes) and set(rows["flow_run_id"]) == {"run-9"}
    assert rows.loc[7, "failed_expectations"] == "high >= low"
    assert rows.loc[0, "failed_expectations"].startswith("chunk rejected: high >= low; close not null")
    assert '"symbol": "AAPL"' in rows.loc[7, "row_data"]
    (entry,) = read_ledger(engine)
    assert entry.status is LedgerStatus.REJECTED and entry.rows == 0
    reject_chunk(engine, CHUNK, minutes, bad, ["high >= low", "close not null"], flow_run_id="run-10")
    assert quarantined(engine) == len(minutes)  # each distinct row once, however often it is rejected


def quarantined(engine: sa.Engine) -> int:
    return count_rows(engine, "SELECT count(*) FROM quarantine")


def count_rows(engine: sa.Engine, sql: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text(sql)).scalar_one())


def test_quarantine_rows_mode_loads_the_good_rows_and_settles(engine: sa.Engine, minutes: pd.DataFrame) -> None:
    def partial_load():  # type: ignore[no-untyped-def]
        return reject_chunk(
            engine,
            CHUNK,
            minutes,
            {7: ["high >= low"], 9: ["close not null"]},
            ["high >= low", "close not null"],
            flow_run_id="r",
            load_good_rows=True,
            checksum=frame_checksum(minutes),
        )

    outcome = partial_load()
    assert outcome.status is LedgerStatus.PARTIAL and outcome.rows == len(minutes) - 2
    assert len(read_bars(engine)) == len(minutes) - 2 and quarantined(engine) == 2
    (entry,) = read_ledger(engine)
    assert entry.status is LedgerStatus.PARTIAL and entry.rows == len(minutes) - 2
    again = partial_load()  # the same source again: settled, nothing written, nothing quarantined again
    assert again.unchanged and again.written == 0 and quarantined(engine) == 2
    # the same bad rows seen by a rejecting run: quarantine gains only the rows it did not hold
    reject_chunk(engine, CHUNK, minutes, {7: ["high >= low"]}, ["high >= low"], flow_run_id="r2")
    assert quarantined(engine) == len(minutes)
    reject_chunk(engine, CHUNK, minutes, {7: ["high >= low"]}, ["high >= low"], flow_run_id="r3")
    assert quarantined(engine) == len(minutes)
    (entry,) = read_ledger(engine)  # rejected now, and the ledger counts the bars an earlier load left
    assert entry.status is LedgerStatus.REJECTED and entry.rows == len(read_bars(engine)) == len(minutes) - 2


def test_an_older_ledger_accepts_the_partial_status(engine: sa.Engine, minutes: pd.DataFrame) -> None:
    load(engine, minutes)
    with engine.begin() as conn:  # the status check as releases before `partial` created it
        if engine.dialect.name == "sqlite":
            conn.execute(sa.text("ALTER TABLE ingest_ledger RENAME TO newer"))
            sql = conn.execute(sa.text("SELECT sql FROM sqlite_master WHERE name = 'newer'")).scalar_one()
            conn.execute(sa.text(sql.replace("'partial', ", "").replace('"newer"', "ingest_ledger")))
            conn.execute(sa.text("INSERT INTO ingest_ledger SELECT * FROM newer"))
            conn.execute(sa.text("DROP TABLE newer"))
        else:
            conn.execute(sa.text("ALTER TABLE ingest_ledger DROP CONSTRAINT ck_ingest_ledger_status"))
            conn.execute(
                sa.text(
                    "ALTER TABLE ingest_ledger ADD CONSTRAINT ck_ingest_ledger_status "
                    "CHECK (status IN ('loaded', 'empty', 'rejected', 'failed'))"
                )
            )
        conn.execute(sa.text("ALTER TABLE quarantine DROP COLUMN row_hash"))
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
        conn.execute(sa.text("UPDATE ingest_ledger SET status = 'partial'"))
    ensure_schema(engine)
    ensure_schema(engine)
    (entry,) = read_ledger(engine)
    assert entry.status is LedgerStatus.LOADED and entry.rows == len(minutes)
    outcome = reject_chunk(
        engine, CHUNK, minutes, {7: ["high >= low"]}, ["high >= low"], flow_run_id="r", load_good_rows=True
    )
    assert outcome.status is LedgerStatus.PARTIAL and read_ledger(engine)[0].status is LedgerStatus.PARTIAL
    assert quarantined(engine) == 1


def test_failure_is_recorded_and_keeps_earlier_bars(engine: sa.Engine, minutes: pd.DataFrame) -> None:
    load(engine, minutes)
    record_failure(engine, CHUNK, "TransientProviderError: HTTP 503", flow_run_id="run-2")
    (entry,) = read_ledger(engine)
    assert entry.status is LedgerStatus.FAILED and entry.rows == len(minutes)
    assert len(read_bars(engine)) == len(minutes)
    new = Chunk("synthetic", "MSFT", "1m", START, END)
    record_failure(engine, new, "TerminalProviderError: unknown symbol", flow_run_id="run-2")
    assert {e.symbol: e.status for e in read_ledger(engine)} == {
        "AAPL": LedgerStatus.FAILED,
        "MSFT": LedgerStatus.FAILED,
    }


def test_a_relative_sqlite_url_means_the_file_in_the_current_directory(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # One engine per URL per process must not carry `sqlite:///candleflow.db` from one directory into another
    # (a long-lived worker, or a test that changed directory, would read and write the wrong warehouse).
    for name in ("one", "two"):
        (tmp_path / name).mkdir()
        monkeypatch.chdir(tmp_path / name)
        engine = get_engine("sqlite:///candleflow.db")
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE IF NOT EXISTS marker (name TEXT)")
            conn.exec_driver_sql("INSERT INTO marker VALUES (?)", (name,))
    for name in ("one", "two"):
        monkeypatch.chdir(tmp_path / name)
        with get_engine("sqlite:///candleflow.db").connect() as conn:
            assert conn.exec_driver_sql("SELECT name FROM marker").scalars().all() == [name]


def _daily(symbols: list[str], start: str = "2020-01-01", end: str = "2025-01-01") -> list[tuple[Chunk, pd.DataFrame]]:
    provider = get_provider("synthetic")
    window = (pd.Timestamp(start, tz="UTC"), pd.Timestamp(end, tz="UTC"))
    return [
        (Chunk("synthetic", s, "1d", *window), provider.fetch(FetchRequest((s,), get_timeframe("1d"), *window)).bars)
        for s in symbols
    ]


@pytest.mark.postgres
def test_fresh_chunks_land_in_one_copy_and_the_rest_one_by_one(postgres_url: str) -> None:
    engine = get_engine(postgres_url)
    ensure_schema(engine)
    parts = _daily(["A", "B", "C", "D"])
    load_chunk(engine, parts[1][0], parts[1][1], checksum=frame_checksum(parts[1][1]), flow_run_id="before")
    loads = [ChunkLoad(c, f, frame_checksum(f)) for c, f in parts]
    with engine.connect() as conn:
        outcomes = load_fresh_chunks(conn, loads, flow_run_id="batch")
    assert sorted(outcomes) == [0, 2, 3]  # B's window held bars already: load_chunk's to handle
    assert all(o.status is LedgerStatus.LOADED and o.written == 1258 and not o.revised for o in outcomes.values())
    assert count(postgres_url, "SELECT count(*) FROM bars") == 4 * 1258
    ledger = {e.symbol: e for e in read_ledger(engine)}
    assert {s: (e.status, e.rows) for s, e in ledger.items()} == {s: (LedgerStatus.LOADED, 1258) for s in "ABCD"}
    with engine.connect() as conn:
        runs = dict(conn.execute(sa.text("SELECT symbol, flow_run_id FROM ingest_ledger")).tuples().all())
    assert runs == {"A": "batch", "B": "before", "C": "batch", "D": "batch"}
    # nothing is fresh any more: the caller loads each chunk on its own, and they are unchanged
    with engine.connect() as conn:
        assert load_fresh_chunks(conn, loads, flow_run_id="again") == {}
        assert all(load_chunk(conn, c, f, checksum=frame_checksum(f), flow_run_id="again").unchanged for c, f in parts)


@pytest.mark.postgres
def test_a_batch_that_meets_a_concurrent_writer_lands_nothing_and_leaves_it_to_load_chunk(postgres_url: str) -> None:
    engine = get_engine(postgres_url)
    ensure_schema(engine)
    parts = _daily(["A", "B"])
    loads = [ChunkLoad(c, f, frame_checksum(f)) for c, f in parts]
    from warehouse.dialects.postgres import PostgresDialect

    real = PostgresDialect.occupied_windows

    # another writer lands B between the probe and the COPY: the probe saw nothing
    def probe_then_other_writer(self, conn, chunks):  # type: ignore[no-untyped-def]
        seen = real(self, conn, chunks)
        load_chunk(engine, parts[1][0], parts[1][1], checksum=frame_checksum(parts[1][1]), flow_run_id="other")
        return seen

    PostgresDialect.occupied_windows = probe_then_other_writer  # type: ignore[method-assign]
    try:
        with engine.connect() as conn:
            assert load_fresh_chunks(conn, loads, flow_run_id="batch") == {}
    finally:
        PostgresDialect.occupied_windows = real  # type: ignore[method-assign]
    assert count(postgres_url, "SELECT count(*) FROM bars WHERE symbol = 'A'") == 0  # rolled back whole
    assert {e.symbol for e in read_ledger(engine)} == {"B"}


def test_a_failure_never_overwrites_what_the_same_run_settled(warehouse_url: str) -> None:
    engine = get_engine(warehouse_url)
    ensure_schema(engine)
    (chunk, frame), (other, _) = _daily(["A", "B"])
    load_chunk(engine, chunk, frame, checksum=frame_checksum(frame), flow_run_id="run-1")
    record_failure(engine, chunk, "RuntimeError: the task broke after this chunk committed", flow_run_id="run-1")
    record_failure(engine, other, "RuntimeError: never fetched", flow_run_id="run-1")
    statuses = {e.symbol: e.status for e in read_ledger(engine)}
    assert statuses == {"A": LedgerStatus.LOADED, "B": LedgerStatus.FAILED}
    record_failure(engine, chunk, "TransientProviderError: a later run failed", flow_run_id="run-2")
    assert {e.symbol: e.status for e in read_ledger(engine)}["A"] is LedgerStatus.FAILED  # another run's word


def test_unchanged_chunks_are_found_together_and_nothing_else_is(warehouse_url: str) -> None:
    """The batched rule is load_chunk's: settled, same window, same checksum, every claimed bar present."""
    engine = get_engine(warehouse_url)
    ensure_schema(engine)
    parts = _daily(["A", "B", "C", "D", "E", "F"], "2024-01-01", "2025-01-01")
    empty_chunk = Chunk("synthetic", "G", "1d", parts[0][0].window_start, parts[0][0].window_end)
    parts.append((empty_chunk, parts[0][1].iloc[0:0]))
    for chunk, frame in parts:
        load_chunk(engine, chunk, frame, checksum=frame_checksum(frame), flow_run_id="first")
    with engine.begin() as conn:  # B lost a bar behind the ledger's back; C's ledger row says `failed`
        conn.execute(
            sa.text("DELETE FROM bars WHERE symbol = 'B' AND ts = (SELECT min(ts) FROM bars WHERE symbol = 'B')")
        )
        conn.execute(sa.text("UPDATE ingest_ledger SET status = 'failed' WHERE symbol = 'C'"))
    loads = []
    for chunk, frame in parts:
        if chunk.symbol == "D":  # the vendor restated a bar
            frame = frame.copy()
            frame.loc[0, "close"] += 0.01
        # F's bars are the same, now from a newer source version: only its description changes
        loads.append(
            ChunkLoad(chunk, frame, frame_checksum(frame), source_version="v2" if chunk.symbol == "F" else None)
        )
    new = Chunk("synthetic", "H", "1d", parts[0][0].window_start, parts[0][0].window_end)  # never loaded
    loads.append(ChunkLoad(new, parts[0][1], frame_checksum(parts[0][1])))
    with engine.connect() as conn:
        outcomes = settle_unchanged(conn, loads)
    settled = {loads[i].chunk.symbol: o for i, o in outcomes.items()}
    assert sorted(settled) == ["A", "E", "F", "G"]
    assert all(o.unchanged and o.written == 0 for o in settled.values())
    assert (settled["G"].status, settled["G"].rows) == (LedgerStatus.EMPTY, 0)
    assert (settled["A"].status, settled["A"].rows) == (LedgerStatus.LOADED, len(parts[0][1]))
    ledger = {e.symbol: e for e in read_ledger(engine)}
    assert ledger["F"].source_version == "v2" and ledger["A"].source_version is None
    with engine.connect() as conn:  # nothing else was rewritten
        assert set(conn.execute(sa.text("SELECT DISTINCT flow_run_id FROM ingest_ledger")).scalars()) == {"first"}
    # the rest load as load_chunk loads them: B's missing bar back, D's restatement written
    with engine.connect() as conn:
        rest = {loads[i].chunk.symbol: loads[i] for i in range(len(loads)) if i not in outcomes}
        written = {
            s: load_chunk(conn, one.chunk, one.frame, checksum=one.checksum, flow_run_id="second").written
            for s, one in rest.items()
        }
    assert written == {"B": 1, "C": 0, "D": 1, "H": len(parts[0][1])}
