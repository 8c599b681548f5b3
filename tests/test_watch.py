"""Watching the warehouse for real: freshness of a warehouse holding a current, a stale, a failing, a rejected, a
delisted and a never loaded series (synthetic, SQLite and PostgreSQL); metrics scraped over HTTP from
`candleflow metrics --serve` and parsed with prometheus_client's parser; a run's figures pushed to a local
Pushgateway stand-in; `status` showing the lag."""

from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
from prometheus_client.parser import text_string_to_metric_families

from candleflow.freshness import LagReason, SeriesFreshness, lag_reason, lags
from candleflow.model import LedgerEntry, LedgerStatus
from candleflow.sessions import closed_sessions
from cli import main
from tests.conftest import ROOT, count, fresh_schema

pytestmark = [pytest.mark.flows, pytest.mark.usefixtures("prefect_harness")]
BIN = ROOT / ".venv" / "bin"
SYMBOLS = ["FRESH", "OLD", "STALE", "FAILING", "REJECTING", "NEVER"]


@dataclass(frozen=True)
class Watched:
    url: str
    delisted_on: dt.date
    stale_end: dt.date
    delisted_lag: int
    stale_lag: int

    def option(self) -> list[str]:
        return ["--option", f"delisted={json.dumps({'OLD': str(self.delisted_on)})}"]


def _closed() -> list[dt.date]:
    today = dt.datetime.now(dt.UTC).date()
    return list(closed_sessions(today - dt.timedelta(days=70), today).index.date)


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def watched(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Watched]:
    """A warehouse whose series are: FRESH current; OLD delisted by the vendor 10 sessions ago (its fetches since
    were empty); STALE not fetched for 6 sessions; FAILING and REJECTING fetched since, their fetch failing
    (unknown to the vendor) or rejected (a bad bar); NEVER never loaded."""
    closed = _closed()
    start, today = closed[0], dt.datetime.now(dt.UTC).date()
    delisted_on, stale_end = closed[-10], closed[-7]
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('watch') / 'w.db'}"
        yield from _build(url, start, today, delisted_on, stale_end)
    else:
        with fresh_schema(f"t_watch_{uuid.uuid4().hex[:8]}") as url:
            yield from _build(url, start, today, delisted_on, stale_end)


def _build(url: str, start: dt.date, today: dt.date, delisted_on: dt.date, stale_end: dt.date) -> Iterator[Watched]:
    w = Watched(url, delisted_on, stale_end, len(_closed()) - 1 - _closed().index(delisted_on), 6)

    def backfill(symbols: str, first: dt.date, last: dt.date, *options: str) -> int:
        dates = ["--start", str(first), "--end", str(last)]
        return main(["backfill", "--warehouse", url, "--symbols", symbols, *dates, *options])

    assert backfill("FRESH,OLD", start, today, *w.option()) == 0
    assert backfill("STALE,FAILING,REJECTING", start, stale_end) == 0
    after = stale_end + dt.timedelta(days=1)
    assert backfill("FAILING", after, today, "--option", 'unknown_symbols=["FAILING"]') == 1
    assert backfill("REJECTING", after, today, "--option", "invalid_chunk_rate=1") == 1
    yield w


def freshness(w: Watched, *args: str) -> list[str]:
    return ["freshness", "--warehouse", w.url, "--symbols", ",".join(SYMBOLS), *args]


def test_freshness_names_each_lagging_series_and_why(watched: Watched, capsys: Any) -> None:
    assert main(freshness(watched, "--no-vendor", "--json")) == 1
    rows = {r["symbol"]: r for r in json.loads(capsys.readouterr().out)}
    got = {s: (r["lag_sessions"], r["reason"], r["stale"]) for s, r in rows.items()}
    assert got == {
        "FRESH": (0, "current", False),
        "OLD": (watched.delisted_lag, "provider had no bars", True),  # the vendor not asked: a plain laggard
        "STALE": (6, "not fetched since", True),
        "FAILING": (6, "failed", True),
        "REJECTING": (6, "rejected", True),
        "NEVER": (None, "never loaded", True),
    }
    assert "unknown symbol FAILING" in rows["FAILING"]["detail"]
    assert rows["STALE"]["newest_session"] == str(watched.stale_end)
    assert next(iter(rows)) == "NEVER"  # laggards first: never loaded, then by lag
    assert main(freshness(watched, "--no-vendor", "--max-lag-sessions", "6")) == 1
    assert "freshness: 2 of 6 series lag more than 6 sessions" in capsys.readouterr().out  # OLD and NEVER


def test_a_delisted_symbol_is_reported_once_and_never_fails(watched: Watched, capsys: Any) -> None:
    assert main(freshness(watched, *watched.option())) == 1
    out = capsys.readouterr().out
    found = "newly delisted (reported once, not a failure): synthetic OLD 1d: delisted by the vendor on "
    found += str(watched.delisted_on)
    assert found in out and "1 delisted (1 found by this check)" in out
    assert count(watched.url, "SELECT count(*) FROM delistings WHERE symbol = 'OLD'") == 1
    assert main(freshness(watched, *watched.option())) == 1
    out = capsys.readouterr().out
    assert "newly delisted" not in out and "; 1 delisted" in out
    assert re.search(r"synthetic OLD 1d\s+│\s+\d+\s+│\s+\S+\s+│\s+delisted", out), out
    # without the stale ones the check passes: a delisted series is not a failure
    assert main(["freshness", "--warehouse", watched.url, "--symbols", "FRESH,OLD"]) == 0
    assert "freshness: all 2 series within 1 session; 1 delisted" in capsys.readouterr().out


def test_status_shows_each_series_lag(watched: Watched, capsys: Any) -> None:
    assert main(["status", "--warehouse", watched.url, "--json"]) == 0
    lag = {r["symbol"]: r["lag_sessions"] for r in json.loads(capsys.readouterr().out)}
    assert lag == {"FRESH": 0, "OLD": watched.delisted_lag, "STALE": 6, "FAILING": 6, "REJECTING": 6}


def scrape(url: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """`candleflow metrics --serve 0` on `url`'s warehouse, scraped once over HTTP and parsed."""
    process = subprocess.Popen(
        [str(BIN / "candleflow"), "metrics", "--serve", "0", "--warehouse", url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        address = re.search(r"(http://127\.0\.0\.1:\d+/metrics)", first)
        assert address, first + (process.stderr.read() if process.stderr else "")
        body = httpx.get(address.group(1), timeout=30).text
    finally:
        process.terminate()
        process.wait(timeout=10)
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def test_metrics_served_over_http_equal_the_warehouse(watched: Watched) -> None:
    got = scrape(watched.url)
    key = (("provider", "synthetic"), ("timeframe", "1d"))
    assert got["candleflow_warehouse_up"][()] == 1.0
    assert got["candleflow_bars"][key] == count(watched.url, "SELECT count(*) FROM bars")
    assert got["candleflow_series"][key] == 5
    for status in ("loaded", "rejected", "failed"):
        sql = f"SELECT count(*) FROM ingest_ledger WHERE status = '{status}'"
        labels = tuple(sorted([*key, ("status", status)]))
        assert got["candleflow_chunks"][labels] == count(watched.url, sql)
    assert got["candleflow_quarantined_rows"][key] == count(watched.url, "SELECT count(*) FROM quarantine") > 0
    lag = {dict(k)["symbol"]: v for k, v in got["candleflow_series_lag_sessions"].items()}
    assert lag == {"FRESH": 0, "OLD": watched.delisted_lag, "STALE": 6, "FAILING": 6, "REJECTING": 6}
    # the worst lag of the series still listed (OLD is delisted once a check has found it: test order)
    assert got["candleflow_worst_lag_sessions"][key] in (6, watched.delisted_lag)
    newest = pd.Timestamp(got["candleflow_newest_bar_timestamp_seconds"][key], unit="s", tz="UTC")
    assert newest.date() == _closed()[-1]
    runs = {dict(k)["flow"]: v for k, v in got["candleflow_last_run_bars_written"].items()}
    assert runs["historical_backfill"] > 0  # the last completed backfill: FRESH,OLD or STALE,... (both wrote)
    stages = {dict(k)["stage"] for k in got["candleflow_last_run_stage_seconds"]}
    assert stages == {"fetch", "validate", "load"}


def test_metrics_printed_parse_and_an_unreachable_warehouse_is_one_line(capsys: Any) -> None:
    code = main(["metrics", "--warehouse", "postgresql+psycopg://postgres@127.0.0.1:1/none"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("candleflow: error: ") and err.count("\n") == 1


class _Gateway(ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _GatewayHandler)
        self.pushes: list[tuple[str, str, str]] = []


class _GatewayHandler(BaseHTTPRequestHandler):
    server: _Gateway

    def _keep(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.server.pushes.append((self.command, self.path, self.rfile.read(length).decode()))
        self.send_response(200)
        self.end_headers()

    do_PUT = do_POST = _keep

    def log_message(self, *_: object) -> None:
        pass


def test_a_run_pushes_its_figures_to_the_pushgateway(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gateway = _Gateway()
    threading.Thread(target=gateway.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("CANDLEFLOW_PUSHGATEWAY_URL", f"http://127.0.0.1:{gateway.server_address[1]}")
        url = f"sqlite:///{tmp_path / 'push.db'}"
        args = ["backfill", "--warehouse", url, "--symbols", "AAPL", "--start", "2024-01-01", "--end", "2024-03-31"]
        assert main(args) == 0
    finally:
        gateway.shutdown()
    ((method, path, body),) = gateway.pushes
    assert (method, path) == ("PUT", "/metrics/job/candleflow/flow/historical_backfill")
    samples = {s.name: s for f in text_string_to_metric_families(body) for s in f.samples}
    assert samples["candleflow_run_bars_written"].value == count(url, "SELECT count(*) FROM bars") == 61
    assert samples["candleflow_run_ok"].value == 1.0
    assert samples["candleflow_run_chunks"].value == 1.0


def test_lag_reason_reads_the_ledger() -> None:
    newest = pd.Timestamp("2026-11-25", tz="UTC")

    def row(status: LedgerStatus, through: str | None = None) -> LedgerEntry:
        start, end = pd.Timestamp("2026-01-01", tz="UTC"), pd.Timestamp("2027-01-01", tz="UTC")
        done = None if through is None else pd.Timestamp(through, tz="UTC")
        return LedgerEntry("p", "X", "1d", start, end, status, complete_through=done, error="HTTP 500\nretry")

    assert lag_reason(newest, [row(LedgerStatus.LOADED, "2026-11-26")]) == (
        LagReason.NOT_FETCHED,
        "no run asked for the sessions after it: is the incremental schedule on?",
    )
    assert lag_reason(newest, [row(LedgerStatus.LOADED, "2026-12-04")])[0] is LagReason.NO_BARS
    assert lag_reason(newest, [row(LedgerStatus.LOADED, "2026-12-04"), row(LedgerStatus.FAILED)]) == (
        LagReason.FAILED,
        "HTTP 500 retry",
    )
    assert lag_reason(None, [])[0] is LagReason.NEVER_LOADED
    assert lag_reason(None, [row(LedgerStatus.EMPTY)])[0] is LagReason.NO_BARS
    # sessions closed after a date, by a given clock: Thanksgiving (Nov 26) and the weekend do not count
    assert lags([dt.date(2026, 11, 25), None], "XNYS", pd.Timestamp("2026-12-01 22:00", tz="UTC")) == [3, None]
    stale = SeriesFreshness("p", "X", "1d", "XNYS", newest, newest.date(), 3, LagReason.NO_BARS)
    assert stale.stale(2) and not stale.stale(3)


def test_an_update_publishes_its_series_freshness_laggards_first(watched: Watched) -> None:
    from flows.incremental import incremental_update
    from tests.test_trust2_cli import artifacts_of

    state = incremental_update(
        symbols=["FRESH", "NEVER", "STALE"], lookback_days=7, warehouse_url=watched.url, return_state=True
    )
    assert state.is_completed(), state.message
    artifact = artifacts_of(state.state_details.flow_run_id)["incremental-update-freshness"]
    text = str(artifact.data)
    assert artifact.description == "freshness: all 3 series within 1 session"  # the update brought all three current
    assert "| synthetic STALE 1d | 0 |" in text and "| synthetic NEVER 1d | 0 |" in text


def test_the_freshness_flow_fails_with_the_stale_series_and_reads_its_flags(watched: Watched) -> None:
    from flows.freshness import freshness_check

    state = freshness_check(symbols=["FRESH", "NEVER"], warehouse_url=watched.url, ask_vendor="no", return_state=True)
    assert state.is_failed() and "ask_vendor 'no' must be true or false" in str(state.message)
    state = freshness_check(symbols=["FRESH", "ZNEVER"], warehouse_url=watched.url, return_state=True)
    assert state.is_failed(), state.message
    assert str(state.message).startswith("StaleSeriesError: freshness: 1 of 2 series lag more than 1 session")
    assert "stale: synthetic ZNEVER 1d: never loaded" in str(state.message)
    assert count(watched.url, "SELECT count(*) FROM run_history WHERE flow = 'freshness_check'") >= 1


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (
            ["freshness", "--symbols", "AAPL", "--max-lag-sessions", "x"],
            "candleflow: error: --max-lag-sessions 'x' is not a whole number: give one of 0 or more",
        ),
        (["metrics", "--serve", "70000"], "candleflow: error: --serve 70000: give a TCP port from 1 to 65535"),
        (["doctor", "--timeout", "0"], "candleflow: error: --timeout 0: give seconds above 0, at most 300"),
    ],
)
def test_bad_input_to_the_watching_commands_is_one_line(
    args: list[str], line: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith(line) and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []  # nothing written
