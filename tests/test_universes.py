"""Universes (issue #19): files of tickers (`@FILE`) and named universes (`universe:NAME`) wherever symbols are taken,
and vendors' tickers kept exactly as the vendor writes them."""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from candleflow.errors import BadInputError
from candleflow.inputs import ANY_PROVIDER, UPPER_CASE, VENDOR_CASE, parse_symbols
from candleflow.universes import Named, resolve, universe_entries
from cli import main
from tests.conftest import count
from tests.flatfiles_server import FlatFilesStandIn
from warehouse.universes import list_universes, load_universe, save_universe

BACKFILL = ["backfill", "--provider", "synthetic", "--timeframe", "1d", "--start", "2024-01-01", "--end", "2024-03-31"]


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# --- the symbol rules ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "ticker", ["BRK.A", "AAPL", "O:AAPL240119C00150000", "I:SPX", "X:BTCUSD", "BRKpA", "ABCw", "BF.B", "T-W"]
)
def test_the_vendor_rule_keeps_each_ticker_exactly_as_written(ticker: str) -> None:
    assert parse_symbols(ticker, VENDOR_CASE) == [ticker]


def test_the_vendor_rule_tells_two_tickers_apart_by_case_and_the_typed_rule_does_not() -> None:
    assert parse_symbols("BRKpA,BRKPA", VENDOR_CASE) == ["BRKpA", "BRKPA"]
    assert parse_symbols("BRKpA,BRKPA", UPPER_CASE) == ["BRKPA"]


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("aapl", "symbol 'aapl' has no capital letter: the vendor's tickers are case-sensitive, write 'AAPL'"),
        ("../x", "malformed symbol '../x': use the vendor's ticker exactly as it writes it"),
        ("A/B", "malformed symbol 'A/B'"),
        ("A;DROP", "malformed symbol 'A;DROP'"),
        ("A B", "malformed symbol 'A B'"),
        ("A'B", 'malformed symbol "A\'B"'),
        ("%41", "malformed symbol '%41'"),
        (":A", "malformed symbol ':A'"),
        ("A" * 33, "malformed symbol"),
    ],
)
def test_the_vendor_rule_stays_closed_to_paths_sql_and_urls(given: str, message: str) -> None:
    with pytest.raises(BadInputError) as caught:
        parse_symbols(given, VENDOR_CASE)
    assert str(caught.value).startswith(message), str(caught.value)


def test_references_are_entries_only_where_the_caller_resolves_them() -> None:
    assert parse_symbols("AAPL,@list.txt, universe:sp500", UPPER_CASE, references=True) == [
        "AAPL",
        "@list.txt",
        "universe:sp500",
    ]
    with pytest.raises(BadInputError, match=re.escape("malformed symbol '@list.txt'")):
        parse_symbols("@list.txt", UPPER_CASE)
    with pytest.raises(BadInputError, match=r"universe name 'S&P' in 'universe:S&P': use 1-48 of a-z"):
        parse_symbols("universe:S&P", UPPER_CASE, references=True)
    with pytest.raises(BadInputError, match="names no file"):
        parse_symbols("@", UPPER_CASE, references=True)


# --- files of tickers ---------------------------------------------------------------------------------------------


def test_a_file_of_tickers_skips_comments_blank_lines_and_repeats(tmp_path: Path) -> None:
    listed = write(tmp_path / "u.txt", "\ufeff# my universe\nAAPL\n\n  msft  # typed lower\nAAPL\nBRK.B\n")
    universe = resolve(["SPY", f"@{listed}", "MSFT"], UPPER_CASE)
    assert universe.symbols == ["SPY", "AAPL", "MSFT", "BRK.B"]
    assert [(p.entry, p.count) for p in universe.parts] == [("listed", 2), (f"@{listed}", 3)]
    assert universe.referenced
    assert universe.describe() == f"2 listed + @{listed} (3): 4 symbols"
    assert universe.entries() == ["SPY", "MSFT", f"@{listed}"]  # what a run hands on, to resolve to the same
    assert resolve(universe.entries(), UPPER_CASE).symbols == ["SPY", "MSFT", "AAPL", "BRK.B"]


def test_a_file_keeps_vendor_tickers_as_written_under_the_vendor_rule(tmp_path: Path) -> None:
    listed = write(tmp_path / "u.txt", "BRK.A\nBRKpA\nO:AAPL240119C00150000\n")
    assert resolve([f"@{listed}"], VENDOR_CASE).symbols == ["BRK.A", "BRKpA", "O:AAPL240119C00150000"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("AAPL\nMS FT\n", "line 2: malformed symbol 'MS FT'"),
        ("# nothing\n\n", "lists no tickers: write one per line (# starts a comment)"),
        ("AAPL\n@other.txt\n", "line 2: '@other.txt': a symbols file lists tickers, not other files"),
        ("AAPL\nuniverse:x\n", "line 2: 'universe:x': a symbols file lists tickers, not other files"),
    ],
)
def test_a_bad_file_is_named_with_its_line(tmp_path: Path, content: str, message: str) -> None:
    listed = write(tmp_path / "u.txt", content)
    with pytest.raises(BadInputError) as caught:
        resolve([f"@{listed}"], UPPER_CASE)
    assert str(caught.value).startswith(f"symbols file {listed} {message}"), str(caught.value)


def test_a_missing_unreadable_or_wrong_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match=r"symbols file nope.txt: no such file \(relative paths start at "):
        resolve(["@nope.txt"], UPPER_CASE)
    with pytest.raises(BadInputError, match="is a directory"):
        resolve([f"@{tmp_path}"], UPPER_CASE)
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe\x00A")
    with pytest.raises(BadInputError, match="is not UTF-8 text"):
        resolve([f"@{tmp_path / 'bin.txt'}"], UPPER_CASE)


def test_named_universes_resolve_through_their_keeper_and_an_unknown_one_is_refused() -> None:
    kept = {"tech": Named(("AAPL", "MSFT"), "refreshed today from polygon")}

    def named(name: str) -> Named:
        if name not in kept:
            raise BadInputError(f"unknown universe {name!r}")
        return kept[name]

    universe = resolve(["universe:tech", "AAPL", "NVDA"], UPPER_CASE, named)
    assert universe.symbols == ["AAPL", "MSFT", "NVDA"]
    assert universe.parts[0].note == "refreshed today from polygon"
    assert universe.describe() == "universe:tech (2) + 2 listed: 3 symbols"
    with pytest.raises(BadInputError, match="unknown universe 'none'"):
        resolve(["universe:none"], UPPER_CASE, named)
    with pytest.raises(BadInputError, match="named universes are kept in a warehouse"):
        resolve(["universe:tech"], UPPER_CASE)


@pytest.mark.parametrize(
    ("kind", "entries", "means"),
    [
        ("tickers", ["AAPL", " @u.txt ", ""], ["AAPL", "@u.txt"]),
        ("ALL", [], ["ALL"]),
        ("ALL", ["all"], ["ALL"]),
        ("named", ["us-cs", "universe:tech"], ["universe:us-cs", "universe:tech"]),
        ("file", ["u.txt", "@/data/v.txt"], ["@u.txt", "@/data/v.txt"]),
    ],
)
def test_a_form_s_universe_choice_says_what_its_symbols_list(kind: str, entries: list[str], means: list[str]) -> None:
    assert universe_entries(kind, entries) == means


@pytest.mark.parametrize(
    ("kind", "entries", "message"),
    [
        ("ALL", ["AAPL"], r"universe ALL takes every ticker of the provider's data: leave symbols empty"),
        ("named", [" "], r"universe named: list in symbols the names of universes kept"),
        ("file", [], r"universe file: list in symbols the paths of files of tickers"),
        ("every", ["AAPL"], r"unknown universe 'every': use one of tickers, ALL, named, file"),
    ],
)
def test_a_universe_choice_without_what_it_needs_is_named(kind: str, entries: list[str], message: str) -> None:
    with pytest.raises(BadInputError, match=message):
        universe_entries(kind, entries)


def test_a_flow_s_universe_choice_resolves_through_its_form(tmp_path: Path, warehouse_url: str) -> None:
    from flows.inputs import check_backfill

    write(tmp_path / "u.txt", "AAPL\nMSFT\n")
    save_universe(warehouse_url, "pair", "typed by hand", ["NVDA", "GOOG"])
    dates = {"start": dt.date(2024, 1, 2), "end": dt.date(2024, 1, 5), "timeframes": ["1d"]}

    def symbols(universe: str, entries: list[str]) -> list[str]:
        inputs = check_backfill(
            provider="synthetic", universe=universe, symbols=entries, warehouse_url=warehouse_url, **dates
        )
        return inputs.symbols

    assert symbols("file", [str(tmp_path / "u.txt")]) == ["AAPL", "MSFT"]
    assert symbols("named", ["pair"]) == ["GOOG", "NVDA"]
    assert symbols("ALL", []) == ["*"]
    with pytest.raises(BadInputError, match="unknown universe 'none' in warehouse"):
        symbols("named", ["none"])
    with pytest.raises(BadInputError, match="unknown universe 'some': use one of tickers, ALL, named, file"):
        symbols("some", ["AAPL"])


# --- named universes in the warehouse -----------------------------------------------------------------------------


def test_a_saved_universe_is_replaced_whole_and_listed(warehouse_url: str) -> None:
    assert list_universes(warehouse_url) == []
    save_universe(warehouse_url, "tech", "polygon stocks CS active", ["MSFT", "AAPL", "MSFT"])
    again = save_universe(warehouse_url, "tech", "polygon stocks CS active", ["NVDA", "BRK.A"])
    assert again.members == 2
    kept = load_universe(warehouse_url, "tech")
    assert kept.symbols == ("BRK.A", "NVDA") and kept.definition == "polygon stocks CS active"
    assert abs(kept.refreshed_at - dt.datetime.now(dt.UTC)) < dt.timedelta(minutes=1)
    assert [(u.name, u.members) for u in list_universes(warehouse_url)] == [("tech", 2)]
    with pytest.raises(BadInputError, match=r"unknown universe 'other' in warehouse .* \(kept: tech\): make it with"):
        load_universe(warehouse_url, "other")


# --- what a person sees on the command line ------------------------------------------------------------------------


@pytest.mark.flows
@pytest.mark.usefixtures("prefect_harness")
def test_a_backfill_of_a_file_and_a_named_universe_reports_what_they_resolved_to(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.test_trust2_cli import artifacts_of

    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path / 'candleflow.db'}"
    write(tmp_path / "u.txt", "# three\nAAPL\nMSFT\nNVDA\n")
    assert main([*BACKFILL, "--symbols", "@u.txt,SPY"]) == 0
    out = capsys.readouterr().out
    assert "symbols @u.txt (3) + 1 listed: 4 symbols" in out, out
    assert count(url, "SELECT count(DISTINCT symbol) FROM bars") == 4

    from flows.backfill import historical_backfill

    save_universe(url, "big-tech", "typed by hand", ["AAPL", "GOOG"])
    state = historical_backfill(
        provider="synthetic",
        symbols=["universe:big-tech"],
        timeframes=["1d"],
        start="2024-01-01",
        end="2024-03-31",
        warehouse_url=url,
        return_state=True,
    )
    summary = state.result()
    assert summary.universe == "universe:big-tech (2): 2 symbols"
    table = artifacts_of(state.state_details.flow_run_id)["historical-backfill-universe"]
    rows = json.loads(table.data) if isinstance(table.data, str) else table.data
    assert [(r["symbol"], r["from"]) for r in rows] == [("AAPL", "universe:big-tech"), ("GOOG", "universe:big-tech")]
    assert rows[0]["note"].startswith("refreshed ") and rows[0]["note"].endswith(" from typed by hand")
    assert count(url, "SELECT count(DISTINCT symbol) FROM bars") == 5
    # the form's universe choice: the same universe by its name alone, held already
    again = historical_backfill(
        provider="synthetic",
        universe="named",
        symbols=["big-tech"],
        timeframes=["1d"],
        start="2024-01-01",
        end="2024-03-31",
        warehouse_url=url,
    )
    assert (again.universe, again.bars_written) == ("universe:big-tech (2): 2 symbols", 0)

    assert main(["status", "--symbols", "universe:big-tech", "--json"]) == 0
    assert {s["symbol"] for s in json.loads(capsys.readouterr().out)} == {"AAPL", "GOOG"}
    assert main(["gaps", "--symbols", "@u.txt", "--start", "2024-01-02", "--end", "2024-03-28"]) == 0
    assert "0 session(s) with missing or partial bars" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("symbols", "message"),
    [
        ("@missing.txt", "candleflow: error: symbols file missing.txt: no such file (relative paths start at "),
        ("@bad.txt", "candleflow: error: symbols file bad.txt line 2: malformed symbol 'A;B': use 1-32"),
        ("universe:nobody", "candleflow: error: unknown universe 'nobody' in warehouse sqlite:///"),
        ("universe:Big", "candleflow: error: universe name 'Big' in 'universe:Big': use 1-48 of a-z"),
    ],
)
@pytest.mark.parametrize("command", ["backfill", "status", "gaps"])
def test_bad_universe_input_exits_2_with_one_line_and_writes_nothing(
    command: str, symbols: str, message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "bad.txt", "AAPL\nA;B\n")
    argv = {
        "backfill": [*BACKFILL, "--symbols", symbols],
        "status": ["status", "--symbols", symbols],
        "gaps": ["gaps", "--symbols", symbols, "--start", "2024-01-02", "--end", "2024-01-31"],
    }[command]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(message) and len(err.splitlines()) == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.txt"]  # no warehouse file made


# --- vendor tickers end to end ------------------------------------------------------------------------------------


@pytest.mark.flows
@pytest.mark.usefixtures("prefect_harness")
def test_flat_file_tickers_load_exactly_as_the_vendor_writes_them(
    files: FlatFilesStandIn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    """Class shares and lower-case preferred markers used to be upper-cased and load nothing."""
    tickers = ["BRK.A", "BRKpA", "BRKPA", "O:AAPL240119C00150000"]
    files.publish(tickers, dt.date(2024, 1, 8), dt.date(2024, 1, 12), minutes=False)
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "u.txt", "\n".join(tickers) + "\n")
    argv = ["backfill", "--provider", "polygon-flatfiles", "--symbols", "@u.txt", "--timeframe", "1d"]
    assert main([*argv, "--start", "2024-01-08", "--end", "2024-01-12"]) == 0, capsys.readouterr()
    url = f"sqlite:///{tmp_path / 'candleflow.db'}"
    for ticker in tickers:
        assert count(url, f"SELECT count(*) FROM bars WHERE symbol = '{ticker}'") == 5, ticker


def test_a_query_of_any_provider_keeps_case_and_option_tickers() -> None:
    assert parse_symbols("BRKpA,O:AAPL240119C00150000,^GSPC", ANY_PROVIDER) == [
        "BRKpA",
        "O:AAPL240119C00150000",
        "^GSPC",
    ]


# --- named universes refreshed from the vendor's reference data ---------------------------------------------------


def test_the_stand_in_s_reference_records_have_the_vendor_s_fields() -> None:
    from tests.conftest import FIXTURES
    from tests.polygon_server import reference_record

    recorded = json.loads((FIXTURES / "massive-client-python/test_rest/mocks/v3/reference/tickers.json").read_text())
    assert set(reference_record("A")) == set(recorded["results"][0])


@pytest.fixture
def polygon_reference(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The polygon stand-in, its references empty until a test fills them, with the provider pointed at it."""
    from tests.polygon_server import KEY, polygon_stand_in

    with polygon_stand_in(set()) as srv:
        monkeypatch.setenv("MASSIVE_API_KEY", KEY)
        monkeypatch.setenv("CANDLEFLOW_POLYGON_BASE_URL", srv.url)
        yield srv


def test_a_universe_refreshed_from_polygon_s_tickers_reference_through_the_real_client(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any, polygon_reference: Any
) -> None:
    from tests.polygon_server import reference_record

    url = f"sqlite:///{tmp_path / 'w.db'}"
    srv = polygon_reference
    stocks = [reference_record(f"T{i:04d}") for i in range(2500)]  # three pages of 1,000
    srv.reference = [
        *stocks,
        reference_record("BRK.A", primary_exchange="XNYS"),
        reference_record("SPY", type="ETF", primary_exchange="ARCX"),
        reference_record("GONE", active=False),
        reference_record("X:BTCUSD", market="crypto", type=None, primary_exchange=None),
    ]
    argv = ["universe", "refresh", "us-cs", "--provider", "polygon", "--type", "CS", "--warehouse", url]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith("universe us-cs: 2501 tickers from polygon market=stocks type=CS active only (new)"), out
    pages = [r["path"] for r in srv.requests if r["path"].startswith("/v3/reference/tickers")]
    assert len(pages) == 3 and "type=CS" in pages[0] and "cursor=" in pages[1]
    kept = load_universe(url, "us-cs").symbols
    assert len(kept) == 2501 and "BRK.A" in kept and "SPY" not in kept and "GONE" not in kept

    srv.reference = stocks[:2000]
    assert main(argv) == 0
    assert "(was 2501: 0 added, 501 dropped (BRK.A, T2000, " in capsys.readouterr().out

    assert main([*argv[:2], "empty", *argv[3:], "--exchange", "XLON"]) == 2
    assert "lists no tickers for market=stocks type=CS exchange=XLON" in capsys.readouterr().err
    monkeypatch.setenv("MASSIVE_API_KEY", "refused")
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "HTTP 401" in err and "universe 'us-cs' was left as it was" in err and len(err.splitlines()) == 1
    assert len(load_universe(url, "us-cs").symbols) == 2000
    assert main(["universe", "list", "--json", "--warehouse", url]) == 0
    assert [(u["name"], u["members"]) for u in json.loads(capsys.readouterr().out)] == [("us-cs", 2000)]


def test_a_universe_of_option_contracts_from_polygon_s_options_reference_through_the_real_client(
    tmp_path: Path, capsys: Any, polygon_reference: Any
) -> None:
    from tests.polygon_server import option_record

    url = f"sqlite:///{tmp_path / 'w.db'}"
    srv = polygon_reference
    strikes = [100 + 2.5 * i for i in range(600)]  # 1,200 AAPL contracts: two pages
    srv.options_reference = [
        *(option_record("AAPL", "2027-01-15", kind, k) for k in strikes for kind in ("call", "put")),
        option_record("SPY", "2026-12-18", "put", 612.5),
        option_record("AAPL", "2024-01-19", "call", 150.0, expired=True),
        option_record("MSFT", "2027-01-15", "call", 400.0),
    ]
    argv = ["universe", "refresh", "opts", "--provider", "polygon", "--market", "options", "--warehouse", url]
    assert main([*argv, "--underlying", "AAPL", "--underlying", "SPY"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(
        "universe opts: 1201 tickers from polygon market=options underlying=AAPL,SPY active only (new)"
    ), out
    kept = load_universe(url, "opts").symbols
    assert "O:AAPL270115C00100000" in kept and "O:AAPL270115P01597500" in kept and "O:SPY261218P00612500" in kept
    assert "O:AAPL240119C00150000" not in kept and not any(s.startswith("O:MSFT") for s in kept)
    pages = [r["path"] for r in srv.requests if r["path"].startswith("/v3/reference/options/contracts")]
    assert len(pages) == 3 and "underlying_ticker=AAPL" in pages[0] and "cursor=" in pages[1]
    assert main([*argv, "--underlying", "AAPL", "--include-inactive"]) == 0
    assert "1201 tickers" in capsys.readouterr().out  # AAPL's 1,200 and its expired one; SPY's dropped
    assert "O:AAPL240119C00150000" in load_universe(url, "opts").symbols
    assert main([*argv]) == 2
    assert capsys.readouterr().err.startswith(
        "candleflow: error: market options takes the underlyings whose contracts it lists, e.g. --underlying AAPL"
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["refresh", "x", "--provider", "csv"], "provider csv cannot list its symbols"),
        (["refresh", "x", "--provider", "polygon"], "provider polygon has no key: set MASSIVE_API_KEY"),
        (["refresh", "Bad Name", "--provider", "synthetic"], "universe name 'Bad Name': use 1-48 of a-z"),
        (["refresh", "x", "--provider", "synthetic", "--market", "bonds"], "unknown market 'bonds'"),
        (["refresh", "x", "--provider", "synthetic", "--exchange", "nyse"], "exchange 'nyse': use the primary"),
        (["show", "nobody"], "unknown universe 'nobody'"),
        (["save", "x", "--symbols", "@nope.txt"], "symbols file nope.txt: no such file"),
    ],
)
def test_bad_universe_commands_exit_2_with_one_line_and_write_nothing(
    argv: list[str], message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MASSIVE_API_KEY", raising=False)
    monkeypatch.delenv("POLYGON_API_KEY", raising=False)
    assert main(["universe", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"candleflow: error: {message}") and len(err.splitlines()) == 1, err
    assert list(tmp_path.iterdir()) == []


def test_a_saved_file_becomes_a_universe_a_backfill_plan_takes(tmp_path: Path, monkeypatch: Any, capsys: Any) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "u.txt", "AAPL\nMSFT\n")
    assert main(["universe", "save", "mine", "--symbols", "@u.txt,NVDA"]) == 0
    assert "universe mine: 3 tickers saved (new); use --symbols universe:mine" in capsys.readouterr().out
    assert main([*BACKFILL, "--symbols", "universe:mine", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "3 chunks planned" in out and "symbols universe:mine (3): 3 symbols" in out, out


# --- the refresh_universe flow ------------------------------------------------------------------------------------


@pytest.mark.flows
@pytest.mark.usefixtures("prefect_harness")
def test_the_refresh_flow_keeps_a_universe_reports_its_change_and_refuses_what_it_cannot_do(
    warehouse_url: str,
) -> None:
    from flows.universes import refresh_universe
    from tests.test_trust2_cli import artifacts_of

    first = refresh_universe(
        name="listed", provider="synthetic", provider_options={"listed_symbols": 7}, warehouse_url=warehouse_url
    )
    assert (first.before, first.universe.members) == (None, 7)
    assert load_universe(warehouse_url, "listed").symbols == tuple(f"S{i:04d}" for i in range(1, 8))
    state = refresh_universe(
        name="listed",
        provider="synthetic",
        provider_options={"listed_symbols": 5},
        warehouse_url=warehouse_url,
        return_state=True,
    )
    again = state.result()
    assert (again.before, again.added, again.dropped) == (7, (), ("S0006", "S0007"))
    report = artifacts_of(state.state_details.flow_run_id)["universe-listed"].data
    assert "5 tickers from synthetic market=stocks active only" in report and "was 7: 0 added, 2 dropped" in report
    assert "**dropped (2):** `S0006`, `S0007`" in report
    for args, message in (
        ({"provider": "csv"}, "provider csv cannot list its symbols: refresh the universe from one that can"),
        ({"provider": "synthetic", "ticker_type": "ETF"}, "provider synthetic lists only common stocks"),
        ({"provider": "synthetic", "market": "bonds"}, "unknown market 'bonds': use one of stocks, otc"),
        ({"provider": "synthetic", "name": "Big"}, "universe name 'Big': use 1-48 of a-z"),
    ):
        failed = refresh_universe(**{"name": "listed", "warehouse_url": warehouse_url, **args}, return_state=True)
        assert failed.is_failed() and message in str(failed.message), (args, failed.message)
    assert load_universe(warehouse_url, "listed").members == 5  # left as it was
