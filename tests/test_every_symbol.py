"""`--symbols ALL` (issue #19): every ticker of the provider's data for each session, as one chunk per file and date
with one ledger row each; loaded from real-width vendor files through boto3 against the local S3 server, from
grouped daily through the real `massive` client, and offline from synthetic."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import sqlalchemy as sa

from candleflow.errors import BadInputError
from candleflow.inputs import VENDOR_CASE
from candleflow.model import EVERY_SYMBOL, Chunk, LedgerStatus
from candleflow.timeframes import get_timeframe
from candleflow.universes import resolve
from cli import main
from providers import get_provider
from providers.base import FetchRequest
from tasks.warehouse import prepare_warehouse
from tests.conftest import count
from tests.flatfiles_server import FlatFilesStandIn
from tests.market_files import MARKET_TICKERS, as_bars, day_table, gzip_csv, market_tickers, minute_table
from warehouse.engine import get_engine
from warehouse.load import load_chunk
from warehouse.queries import read_ledger
from warehouse.schema import ensure_schema, ensure_window_index

D = dt.date
SESSIONS = [D(2024, 3, 4), D(2024, 3, 5), D(2024, 3, 6)]


def stored_bars(url: str, provider: str, timeframe: str = "1d") -> pd.DataFrame:
    with get_engine(url).connect() as conn:
        frame = pd.read_sql(
            sa.text(
                "SELECT symbol, ts, open, high, low, close, volume FROM bars WHERE provider = :p AND timeframe = :t"
            ),
            conn,
            params={"p": provider, "t": timeframe},
        )
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
    return frame.sort_values(["symbol", "ts"]).reset_index(drop=True)


# --- the input ----------------------------------------------------------------------------------------------------


def test_all_is_one_entry_of_its_own() -> None:
    universe = resolve(["ALL"], VENDOR_CASE)
    assert universe.every and universe.symbols == [EVERY_SYMBOL] and universe.entries() == ["ALL"]
    assert universe.describe() == "ALL: every ticker the provider's data holds for each session"
    with pytest.raises(BadInputError, match=r"give it alone .*list it in a file, @FILE, or a named universe"):
        resolve(["ALL", "AAPL"], VENDOR_CASE)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--provider", "csv", "--option", "directory=.", "--timeframe", "1d"],
            "candleflow: error: --symbols ALL: provider csv cannot fetch every ticker of a session in one request at "
            "1d; name the tickers, @FILE or universe:NAME (universe refresh), or use databento (every timeframe), "
            "polygon (1d), polygon-flatfiles (every timeframe), synthetic (every timeframe)",
        ),
        (
            ["--provider", "polygon", "--timeframe", "1m"],
            "candleflow: error: --symbols ALL: provider polygon cannot fetch every ticker of a session in one request "
            "at 1m (only at 1d);",
        ),
        (
            ["--provider", "synthetic", "--timeframe", "1d", "--symbols", "all,AAPL"],
            "candleflow: error: symbols entry ALL means every ticker of the provider's data: give it alone",
        ),
    ],
)
def test_all_where_it_cannot_be_answered_exits_2_with_one_line_and_writes_nothing(
    argv: list[str], message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MASSIVE_API_KEY", "k")
    symbols = [] if "--symbols" in argv else ["--symbols", "ALL"]
    assert main(["backfill", *argv, *symbols, "--start", "2024-03-04", "--end", "2024-03-06"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(message) and len(err.splitlines()) == 1, err
    assert list(tmp_path.iterdir()) == []


# --- real-width files ---------------------------------------------------------------------------------------------


def test_the_generated_files_are_the_vendor_s_layout_at_real_width() -> None:
    table = day_table(SESSIONS[0])
    assert table.column_names == ["ticker", "volume", "open", "close", "high", "low", "window_start", "transactions"]
    assert 0.97 * MARKET_TICKERS < table.num_rows <= MARKET_TICKERS  # a few tickers do not trade that day
    tickers = set(market_tickers())
    assert {"." in t for t in tickers} == {True, False} and any(len(t) > 2 and t[-2] == "p" for t in tickers)
    assert all(VENDOR_CASE.pattern.fullmatch(t) for t in tickers)
    assert gzip_csv(table) == gzip_csv(day_table(SESSIONS[0]))  # deterministic
    minutes = minute_table(SESSIONS[0], tickers=2_000, rows=200_000)
    assert abs(minutes.num_rows - 200_000) < 2_000
    per_ticker = minutes.group_by("ticker").aggregate([("window_start", "count_distinct"), ("window_start", "count")])
    assert pc.all(pc.equal(per_ticker["window_start_count_distinct"], per_ticker["window_start_count"])).as_py()


@pytest.mark.flows
@pytest.mark.usefixtures("prefect_harness")
def test_every_ticker_of_real_width_day_files_loads_once_with_one_ledger_row_per_file(
    files: FlatFilesStandIn, warehouse_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    from flows.backfill import historical_backfill

    tables = {day: day_table(day) for day in SESSIONS}
    for day, table in tables.items():
        files.put_body(day, "day_aggs_v1", gzip_csv(table))
    args = dict(
        provider="polygon-flatfiles", symbols=["ALL"], start=SESSIONS[0], end=SESSIONS[-1], warehouse_url=warehouse_url
    )
    first = historical_backfill(**args)
    assert first.ok and first.planned == 3 and first.counts()["loaded"] == 3, first.headline()
    assert first.universe == "ALL: every ticker the provider's data holds for each session"
    expected = pd.concat([as_bars(t, daily=True) for t in tables.values()]).sort_values(["symbol", "ts"])
    stored = stored_bars(warehouse_url, "polygon-flatfiles")
    assert len(stored) == len(expected) > 3 * 0.97 * MARKET_TICKERS
    pd.testing.assert_frame_equal(stored, expected.reset_index(drop=True), check_dtype=False)
    ledger = read_ledger(get_engine(warehouse_url), "polygon-flatfiles")
    assert [(e.symbol, e.status, e.rows) for e in ledger] == [
        (EVERY_SYMBOL, LedgerStatus.LOADED, t.num_rows) for t in tables.values()
    ]
    assert all(e.source_version and len(e.source_version) == 32 for e in ledger)  # each file's ETag

    second = historical_backfill(**args)
    assert second.results == [] and second.skipped == 3  # held: nothing fetched, nothing written

    # the vendor republishes 5 March: one ticker gone, one close corrected
    day = SESSIONS[1]
    table = tables[day]
    gone, fixed = table["ticker"][10].as_py(), table["ticker"][20].as_py()
    frame = table.to_pandas()
    frame = frame[frame["ticker"] != gone]
    frame.loc[frame["ticker"] == fixed, "close"] = frame.loc[frame["ticker"] == fixed, "low"]
    files.put_body(day, "day_aggs_v1", gzip_csv(pa.Table.from_pandas(frame, preserve_index=False)))
    third = historical_backfill(**args)
    (result,) = third.results
    assert (result.chunk.symbol, result.chunk.window_start.date(), result.status) == (EVERY_SYMBOL, day, "loaded")
    assert (result.removed, result.written, result.revised) == (1, 1, True)
    assert count(warehouse_url, f"SELECT count(*) FROM bars WHERE symbol = '{gone}'") == 2
    assert count(warehouse_url, "SELECT count(*) FROM ingest_ledger") == 3

    monkeypatch.chdir(tmp_path)
    gaps = ["gaps", "--provider", "polygon-flatfiles", "--warehouse", warehouse_url, "--start", "2024-03-04"]
    assert "ix_bars_window" in {ix["name"] for ix in sa.inspect(get_engine(warehouse_url)).get_indexes("bars")}
    assert main([*gaps, "--end", "2024-03-06", "--symbols", "ALL"]) == 0
    assert "0 session(s) with no bars out of 3 expected" in capsys.readouterr().out
    # a ticker the republished file no longer has: the vendor had no bar for it that day, and the ledger says so
    assert main([*gaps, "--end", "2024-03-06", "--symbols", gone, "--json"]) == 1
    (missing,) = json.loads(capsys.readouterr().out)
    assert (missing["session"], missing["state"], missing["reason"]) == (
        "2024-03-05",
        "explained",
        "provider had no bars (ledger: empty)",
    )
    assert main(["status", "--warehouse", warehouse_url, "--symbols", "ALL", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert (row["symbol"], row["bars"], row["sessions"], row["missing"], row["chunks"]["loaded"]) == (
        "ALL",
        len(expected) - 1,
        3,
        0,
        3,
    )


@pytest.mark.flows
@pytest.mark.usefixtures("prefect_harness")
def test_a_minute_file_loads_whole_in_its_session_s_window(files: FlatFilesStandIn, sqlite_url: str) -> None:
    from flows.backfill import historical_backfill

    table = minute_table(D(2024, 3, 8), tickers=400, rows=40_000)  # the Friday before the DST change
    files.put_body(D(2024, 3, 8), "minute_aggs_v1", gzip_csv(table))
    summary = historical_backfill(
        provider="polygon-flatfiles",
        symbols=["ALL"],
        timeframes=["1m"],
        start=D(2024, 3, 8),
        end=D(2024, 3, 8),
        warehouse_url=sqlite_url,
    )
    assert summary.ok and summary.counts()["loaded"] == 1, summary.headline()
    stored = stored_bars(sqlite_url, "polygon-flatfiles", "1m")
    pd.testing.assert_frame_equal(stored, as_bars(table, daily=False), check_dtype=False)
    (entry,) = read_ledger(get_engine(sqlite_url), "polygon-flatfiles")
    assert (entry.symbol, entry.rows) == (EVERY_SYMBOL, table.num_rows)


@pytest.mark.flows
@pytest.mark.usefixtures("prefect_harness")
def test_every_option_contract_of_an_opra_day_file_loads_as_the_vendor_writes_it(
    files: FlatFilesStandIn, sqlite_url: str
) -> None:
    from flows.backfill import historical_backfill
    from tests.market_files import options_day_table

    """Stored apart from the stocks of the same days (`polygon-flatfiles:opra`): a run of every contract never
    takes the stocks' bars for bars its file dropped."""
    stocks = day_table(SESSIONS[0], tickers=500)
    files.put_body(SESSIONS[0], "day_aggs_v1", gzip_csv(stocks))
    first = historical_backfill(
        provider="polygon-flatfiles", symbols=["ALL"], start=SESSIONS[0], end=SESSIONS[0], warehouse_url=sqlite_url
    )
    assert first.ok and count(sqlite_url, "SELECT count(*) FROM bars") == stocks.num_rows
    tables = {day: options_day_table(day) for day in SESSIONS[:2]}
    for day, table in tables.items():
        files.put_body(day, "day_aggs_v1", gzip_csv(table), dataset="us_options_opra")
    summary = historical_backfill(
        provider="polygon-flatfiles",
        provider_options={"dataset": "us_options_opra"},
        symbols=["ALL"],
        start=SESSIONS[0],
        end=SESSIONS[1],
        warehouse_url=sqlite_url,
    )
    assert summary.ok and summary.counts()["loaded"] == 2, summary.headline()
    expected = pd.concat([as_bars(t, daily=True) for t in tables.values()]).sort_values(["symbol", "ts"])
    stored = stored_bars(sqlite_url, "polygon-flatfiles:opra")
    pd.testing.assert_frame_equal(stored, expected.reset_index(drop=True), check_dtype=False)
    assert stored["symbol"].str.fullmatch(r"O:(AAPL|MSFT|SPY)\d{6}[CP]\d{8}").all()
    assert count(sqlite_url, "SELECT count(*) FROM ingest_ledger WHERE provider = 'polygon-flatfiles:opra'") == 2
    assert len(stored_bars(sqlite_url, "polygon-flatfiles")) == stocks.num_rows  # the stocks are all there


# --- grouped daily ------------------------------------------------------------------------------------------------


def test_grouped_daily_answers_every_ticker_in_one_request_per_session(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.polygon_server import KEY, polygon_stand_in

    tickers = {"AAA", "BRK.A", "BACpB", "ZZZ"}
    with polygon_stand_in(tickers, page_size=5000) as srv:
        monkeypatch.setenv("MASSIVE_API_KEY", KEY)
        monkeypatch.setenv("CANDLEFLOW_POLYGON_BASE_URL", srv.url)
        request = FetchRequest(
            (EVERY_SYMBOL,),
            get_timeframe("1d"),
            pd.Timestamp("2024-03-04", tz="UTC"),
            pd.Timestamp("2024-03-07", tz="UTC"),
        )
        bars = get_provider("polygon").fetch(request).bars
        asked = [r["path"].split("?")[0] for r in srv.requests]
    assert asked == [f"/v2/aggs/grouped/locale/us/market/stocks/2024-03-0{d}" for d in (4, 5, 6)]  # no lookups
    assert set(bars["symbol"]) == tickers and len(bars) == 3 * len(tickers)
    summary = get_provider("polygon").describe_requests([[chunk_of("polygon", "1d", "2024-03-04", "2024-03-07")]])
    assert summary == "every ticker's daily bars in 3 grouped-daily requests"


def test_grouped_daily_of_a_whole_market_through_the_real_client(monkeypatch: pytest.MonkeyPatch) -> None:
    """The stand-in answers a session with every ticker of the generated day file (~11,000), in the vendor's
    shape; the massive client parses it and every ticker becomes a bar of its own."""
    from tests.polygon_server import KEY, polygon_stand_in

    with polygon_stand_in(set(), page_size=5000) as srv:
        srv.market_tickers = MARKET_TICKERS
        monkeypatch.setenv("MASSIVE_API_KEY", KEY)
        monkeypatch.setenv("CANDLEFLOW_POLYGON_BASE_URL", srv.url)
        start = pd.Timestamp("2024-03-05", tz="UTC")
        request = FetchRequest((EVERY_SYMBOL,), get_timeframe("1d"), start, start + pd.Timedelta(days=1))
        bars = get_provider("polygon").fetch(request).bars
    expected = as_bars(day_table(D(2024, 3, 5)), daily=True)
    got = bars[["symbol", "ts", "open", "high", "low", "close", "volume"]].sort_values(["symbol", "ts"])
    pd.testing.assert_frame_equal(got.reset_index(drop=True), expected, check_dtype=False)


def chunk_of(provider: str, timeframe: str, start: str, end: str) -> Chunk:
    return Chunk(provider, EVERY_SYMBOL, timeframe, pd.Timestamp(start, tz="UTC"), pd.Timestamp(end, tz="UTC"))


# --- the warehouse ------------------------------------------------------------------------------------------------


def market_frame(tickers: list[str], day: str, close: float = 10.0) -> pd.DataFrame:
    n = len(tickers)
    return pd.DataFrame(
        {
            "provider": "polygon-flatfiles",
            "symbol": tickers,
            "timeframe": "1d",
            "ts": pd.Timestamp(day, tz="UTC"),
            "open": np.full(n, 10.0),
            "high": np.full(n, 11.0),
            "low": np.full(n, 9.0),
            "close": np.full(n, close),
            "volume": np.arange(n, dtype="float64"),
            "vwap": np.full(n, np.nan),
            "trades": pd.array([None] * n, dtype="Int64"),
        }
    )


def test_a_window_of_every_ticker_is_written_keyed_and_ends_equal_to_its_file(warehouse_url: str) -> None:
    engine = get_engine(warehouse_url)
    ensure_schema(engine)
    ensure_window_index(engine)
    chunk = chunk_of("polygon-flatfiles", "1d", "2024-03-05", "2024-03-06")
    tickers = ["A", "BRK.A", "BACpB", "LONGTICKER", "Z"]
    neighbour = market_frame(["A"], "2024-03-06")  # the next day's bar of a ticker stays whatever happens here
    load_chunk(engine, replace_window(chunk, "2024-03-06"), neighbour, checksum="n", flow_run_id=None)
    # a ticker fetched on its own (an OTC one a grouped answer leaves out): its own ledger row vouches for its bar
    alone = replace_window(chunk, "2024-03-05", "OTCX")
    load_chunk(engine, alone, market_frame(["OTCX"], "2024-03-05"), checksum="o", flow_run_id=None)
    first = load_chunk(engine, chunk, market_frame(tickers, "2024-03-05"), checksum="a", flow_run_id=None)
    assert (first.status, first.written, first.removed) == (LedgerStatus.LOADED, 5, 0)
    again = load_chunk(engine, chunk, market_frame(tickers, "2024-03-05"), checksum="a", flow_run_id=None)
    assert again.unchanged and again.written == 0
    fewer = market_frame(["A", "BRK.A", "LONGTICKER", "Z"], "2024-03-05", close=10.5)
    changed = load_chunk(engine, chunk, fewer, checksum="b", flow_run_id=None)
    assert (changed.written, changed.removed, changed.revised) == (4, 1, True)
    stored = stored_bars(warehouse_url, "polygon-flatfiles")
    assert stored[["symbol", "close"]].values.tolist() == [
        ["A", 10.5],
        ["A", 10.0],
        ["BRK.A", 10.5],
        ["LONGTICKER", 10.5],
        ["OTCX", 10.0],
        ["Z", 10.5],
    ]
    empty = load_chunk(engine, chunk, fewer.iloc[0:0], checksum="c", flow_run_id=None)
    assert (empty.status, empty.removed) == (LedgerStatus.EMPTY, 4)
    assert sorted(stored_bars(warehouse_url, "polygon-flatfiles")["symbol"]) == ["A", "OTCX"]  # neither was its


def replace_window(chunk: Chunk, day: str, symbol: str = "A") -> Chunk:
    start = pd.Timestamp(day, tz="UTC")
    return Chunk(chunk.provider, symbol, chunk.timeframe, start, start + pd.Timedelta(days=1))


def test_the_window_index_is_made_by_the_first_run_of_every_ticker_only(warehouse_url: str) -> None:
    """Series-by-series loads do not pay for it (a fresh COPY took twice as long with it); a warehouse made by
    them gets it when a run of every ticker first prepares it, and a second one finds it."""
    engine = get_engine(warehouse_url)
    ensure_schema(engine)

    def indexes() -> set[str]:
        return {str(ix["name"]) for ix in sa.inspect(engine).get_indexes("bars")}

    assert "ix_bars_window" not in indexes()
    prepare_warehouse.fn(warehouse_url, every_symbol=True)
    assert "ix_bars_window" in indexes()
    prepare_warehouse.fn(warehouse_url, every_symbol=True)
    assert "ix_bars_window" in indexes()


# --- offline, end to end ------------------------------------------------------------------------------------------


@pytest.mark.flows
@pytest.mark.usefixtures("prefect_harness")
def test_synthetic_all_backfills_updates_and_repairs_with_a_row_per_session(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path / 'candleflow.db'}"
    common = ["--symbols", "ALL", "--timeframe", "1d", "--option", "listed_symbols=30"]
    assert main(["backfill", *common, "--start", "2024-01-02", "--end", "2024-01-12"]) == 0
    assert count(url, "SELECT count(DISTINCT symbol) FROM bars") == 30
    assert count(url, "SELECT count(*) FROM ingest_ledger WHERE symbol = '*'") == 9
    capsys.readouterr()
    assert main(["update", *common, "--end", "2024-01-19"]) == 0
    out = capsys.readouterr().out
    assert "symbols ALL: every ticker" in out
    assert count(url, "SELECT count(*) FROM bars") == 30 * 13
    assert count(url, "SELECT count(*) FROM ingest_ledger") == 13  # a row per session, not per ticker

    with get_engine(url).begin() as conn:  # bars deleted behind the ledger's back
        conn.execute(sa.text("DELETE FROM bars WHERE symbol = 'S0003' AND ts < '2024-01-06'"))
    assert main(["repair", *common, "--end", "2024-01-19", "--lookback-days", "20", "--dry-run"]) == 0
    plan = capsys.readouterr().out
    assert "would fetch synthetic:ALL:1d:2024-01-02..2024-01-02" in plan and "4 session(s) to repair" in plan, plan
    assert main(["repair", *common, "--end", "2024-01-19", "--lookback-days", "20"]) == 0
    assert count(url, "SELECT count(*) FROM bars") == 30 * 13


def test_bars_of_many_tickers_copy_into_postgres_exactly(postgres_url: str) -> None:
    """The COPY payload of a chunk of every ticker groups rows by the ticker's length in bytes; a ticker outside
    ASCII (none is, so far) takes the slower path and still lands as written."""
    import psycopg

    from warehouse.dialects import pgcopy

    frame = market_frame(["A", "BRK.A", "ÄBC", "LONGTICKER", "Z"], "2024-03-05")
    frame["trades"] = pd.array([1, None, 3, 4, 5], dtype="Int64")
    engine = get_engine(postgres_url)
    ensure_schema(engine)
    with engine.connect() as conn:
        raw: psycopg.Connection = conn.connection.driver_connection  # type: ignore[assignment]
        columns = "provider, symbol, timeframe, ts, open, high, low, close, volume, vwap, trades"
        with raw.cursor() as cur, cur.copy(f"COPY bars ({columns}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.write(pgcopy.encode_tickers(frame, ("polygon-flatfiles", "1d")))
        raw.commit()
    stored = stored_bars(postgres_url, "polygon-flatfiles")
    assert stored["symbol"].tolist() == ["A", "BRK.A", "LONGTICKER", "Z", "ÄBC"]
    assert stored["volume"].tolist() == [0.0, 1.0, 3.0, 4.0, 2.0]
    assert count(postgres_url, "SELECT count(*) FROM bars WHERE trades IS NULL") == 1


@pytest.mark.parametrize("on_invalid", ["reject", "quarantine_rows"])
def test_a_bad_bar_in_a_file_of_every_ticker_is_quarantined_under_its_own_ticker(
    on_invalid: str, warehouse_url: str
) -> None:
    """One bad bar among a session's tickers: `reject` keeps the session's file out (its rejection names the way
    out), `quarantine_rows` loads every other ticker; either way the bad row is quarantined under its ticker."""
    from ingest import Attempt, run_batch
    from providers.synthetic import SyntheticProvider

    engine = get_engine(warehouse_url)
    ensure_schema(engine)
    ensure_window_index(engine)
    provider = SyntheticProvider(listed_symbols=40, invalid_chunk_rate=1.0, seed=3)
    chunk = chunk_of("synthetic", "1d", "2024-03-05", "2024-03-06")
    (result,) = run_batch([chunk], provider, engine, on_invalid, attempt=Attempt("run-1")).results  # type: ignore[arg-type]
    with engine.connect() as conn:
        quarantined = conn.execute(sa.text("SELECT symbol FROM quarantine")).scalars().all()
    assert len(quarantined) == (40 if on_invalid == "reject" else 1)  # rejected: the whole file, row by row
    assert all(symbol != EVERY_SYMBOL and symbol.startswith("S00") for symbol in quarantined)
    (entry,) = read_ledger(engine)
    assert entry.symbol == EVERY_SYMBOL
    if on_invalid == "reject":
        assert result.status == entry.status == LedgerStatus.REJECTED
        assert "--on-invalid quarantine_rows" in (result.error or ""), result.error
        assert count(warehouse_url, "SELECT count(*) FROM bars") == 0
    else:
        assert result.status == entry.status == LedgerStatus.PARTIAL
        assert count(warehouse_url, "SELECT count(*) FROM bars") == 39


@pytest.mark.flows
@pytest.mark.usefixtures("prefect_harness")
def test_an_older_warehouse_of_rows_per_ticker_and_date_migrates_on_its_first_run_of_every_ticker(
    files: FlatFilesStandIn, warehouse_url: str
) -> None:
    """Flat-file runs kept a ledger row per ticker and date; the first run of every ticker over those dates folds
    the rows of the tickers its files hold into one row per date. A ticker the files lack keeps its rows."""
    from flows.backfill import historical_backfill

    tables = {day: day_table(day, tickers=60) for day in SESSIONS}
    for day, table in tables.items():
        files.put_body(day, "day_aggs_v1", gzip_csv(table))
    tickers = sorted(set(tables[SESSIONS[0]]["ticker"].to_pylist()))[:3]
    window = dict(provider="polygon-flatfiles", start=SESSIONS[0], end=SESSIONS[-1], warehouse_url=warehouse_url)
    before = historical_backfill(symbols=[*tickers, "NOTINFILES"], **window)
    assert before.ok and count(warehouse_url, "SELECT count(*) FROM ingest_ledger") == 4 * 3
    after = historical_backfill(symbols=["ALL"], **window)
    assert after.ok and after.counts()["loaded"] == 3, after.headline()
    left = read_ledger(get_engine(warehouse_url), "polygon-flatfiles")
    assert sorted({e.symbol for e in left}) == [EVERY_SYMBOL, "NOTINFILES"]  # its `empty` rows say what ALL cannot
    assert len(left) == 3 + 3
    again = historical_backfill(symbols=[*tickers], **window)  # the tickers' own runs find their dates held
    assert again.results == [] and again.skipped == 3 * 3
